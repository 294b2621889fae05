"""The webhook service: users register endpoints for order events; the secret is shown once."""
