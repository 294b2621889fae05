-- Refresh tokens the auth service handed out, by their `jti`. A login starts a family; each
-- refresh marks its token used and adds the successor to the same family. A token presented
-- again after use (a copy) revokes its whole family, as logout does. A family counts as
-- revoked once any of its tokens is, so a successor added by a refresh racing a revocation
-- can never be used either.
CREATE TABLE auth.refresh_tokens (
    token_id   text PRIMARY KEY CHECK (length(token_id) BETWEEN 1 AND 128),
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES auth.users (user_id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    CHECK (expires_at > issued_at)
);

CREATE INDEX refresh_tokens_family ON auth.refresh_tokens (family_id);
