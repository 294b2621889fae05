-- The trace context (W3C traceparent) of the event or call that made a delivery: the
-- sender's attempts continue that trace. NULL when tracing was off.
ALTER TABLE webhook.deliveries ADD COLUMN traceparent text;
