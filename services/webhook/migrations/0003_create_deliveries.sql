-- Delivery of order events to webhooks (see services/webhook/sender.py).
--
-- The dispatcher consumer records one delivery per matching webhook in the same transaction
-- as its inbox entry; senders claim due deliveries with FOR UPDATE SKIP LOCKED and a lease,
-- POST them outside any consumer transaction and record each attempt.

ALTER TABLE webhook.webhooks
    ADD COLUMN previous_secret_encrypted  bytea,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN consecutive_failures       integer NOT NULL DEFAULT 0,
    ADD COLUMN disabled_at                timestamptz,
    ADD COLUMN disabled_reason            text NOT NULL DEFAULT '';

-- What this context knows of each order, folded from the order events: the `data` of the
-- order's deliveries. (No service reads another's tables; the events carry what it needs.)
CREATE TABLE webhook.orders (
    order_id   text PRIMARY KEY,
    user_id    text NOT NULL,
    version    bigint NOT NULL,
    document   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook.deliveries (
    delivery_id      uuid PRIMARY KEY,
    -- The order deliveries were recorded in: one order's deliveries to one webhook are sent
    -- one at a time, in this order.
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    webhook_id       uuid NOT NULL REFERENCES webhook.webhooks ON DELETE CASCADE,
    -- The Kafka event the delivery was made for (or a fresh id for a test event).
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    order_id         text,
    -- The exact bytes every attempt sends and signs.
    body             bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'succeeded', 'failed', 'parked')),
    attempts         integer NOT NULL DEFAULT 0,
    -- Attempts since the delivery was recorded or last replayed, and when that was: the
    -- retry schedule's clock.
    round_attempts   integer NOT NULL DEFAULT 0,
    round_started_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text NOT NULL DEFAULT '',
    finished_at      timestamptz,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX deliveries_due ON webhook.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_webhook ON webhook.deliveries (webhook_id, seq DESC);
CREATE INDEX deliveries_pending_by_order ON webhook.deliveries (webhook_id, order_id, seq)
    WHERE state = 'pending';
CREATE INDEX deliveries_finished_at ON webhook.deliveries USING brin (finished_at);

CREATE TABLE webhook.delivery_attempts (
    delivery_id      uuid NOT NULL REFERENCES webhook.deliveries ON DELETE CASCADE,
    number           integer NOT NULL,
    started_at       timestamptz NOT NULL,
    latency_ms       integer NOT NULL,
    status_code      integer,
    response_excerpt text NOT NULL DEFAULT '',
    error            text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, number)
);

SELECT public.ordermesh_create_inbox('webhook');
SELECT public.ordermesh_grant_service('webhook', 'ordermesh_webhook');
