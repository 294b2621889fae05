"""Postgres repositories, the signing-key store, argon2 hashing and JWT signing."""
