"""The Postgres repository of payments."""
