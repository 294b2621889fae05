"""The Postgres repository, the DNS resolver and encryption of signing secrets."""
