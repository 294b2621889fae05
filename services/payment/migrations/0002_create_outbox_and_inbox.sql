-- Events the payment service publishes, written in the transaction of the payment they
-- report; the outbox relay publishes them (woken by the notify trigger).
SELECT public.ordermesh_create_outbox('payment');

-- Event ids each consumer group of the payment service has applied (effectively-once).
SELECT public.ordermesh_create_inbox('payment');
