CREATE SCHEMA IF NOT EXISTS payment;

-- One row per order holds its payment outcome and, after a refund, the refund: the unique
-- order_id allows one capture per order, the refund columns at most one refund per payment.
CREATE TABLE payment.payments (
    payment_id         uuid PRIMARY KEY,
    order_id           text NOT NULL CONSTRAINT payments_one_per_order UNIQUE,
    user_id            text NOT NULL,
    status             text NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    method             text NOT NULL,
    provider_reference text,
    decline_reason     text,
    refund_reference   text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    refunded_at        timestamptz,
    CONSTRAINT payments_capture_has_reference
        CHECK (status = 'declined' OR provider_reference IS NOT NULL),
    CONSTRAINT payments_decline_has_reason
        CHECK ((status = 'declined') = (decline_reason IS NOT NULL)),
    CONSTRAINT payments_refund_is_recorded
        CHECK ((status = 'refunded') = (refunded_at IS NOT NULL)),
    CONSTRAINT payments_refund_reference_only_when_refunded
        CHECK (refund_reference IS NULL OR status = 'refunded')
);

CREATE INDEX payments_by_user ON payment.payments (user_id, created_at);
