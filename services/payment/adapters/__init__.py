"""The payment service's adapters: the Postgres repository, the outbox writer and the
payment provider."""
