CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    full_name     text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
    phone         text CHECK (length(phone) BETWEEN 1 AND 40),
    tier          text NOT NULL DEFAULT 'free'
                  CHECK (tier IN ('free', 'standard', 'premium', 'enterprise')),
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin', 'system')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

-- A key is pending (published in the JWKS, not yet signing) until activated_at is set; the
-- active key is the most recently activated one that is not retired. Retired keys are
-- neither published nor used.
CREATE TABLE auth.signing_keys (
    kid                   text PRIMARY KEY,
    public_key_pem        text NOT NULL,
    private_key_encrypted bytea NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    activated_at          timestamptz,
    retired_at            timestamptz,
    CHECK (activated_at IS NULL OR activated_at >= created_at),
    CHECK (retired_at IS NULL OR retired_at >= created_at)
);

CREATE UNIQUE INDEX signing_keys_one_pending ON auth.signing_keys ((true))
    WHERE activated_at IS NULL AND retired_at IS NULL;

CREATE INDEX signing_keys_active ON auth.signing_keys (activated_at DESC)
    WHERE activated_at IS NOT NULL AND retired_at IS NULL;
