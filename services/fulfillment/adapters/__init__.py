"""The Postgres repository of shipments."""
