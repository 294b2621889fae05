CREATE SCHEMA IF NOT EXISTS webhook;

-- The signing secret is stored Fernet-encrypted (the dispatcher decrypts it to sign
-- deliveries); it is shown to the user once, when the webhook is registered.
CREATE TABLE webhook.webhooks (
    webhook_id       uuid PRIMARY KEY,
    user_id          text NOT NULL,
    url              text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    events           text[] NOT NULL CHECK (cardinality(events) > 0),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    secret_encrypted bytea NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_by_user ON webhook.webhooks (user_id, created_at);
