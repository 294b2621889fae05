"""The auth service: accounts, argon2id password hashing, RS256 tokens and their signing keys."""
