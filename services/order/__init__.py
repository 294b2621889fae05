"""Orders: the order aggregate, its guarded lifecycle and the order API."""
