"""Plain-Python model and rules of webhook registrations: no I/O, no frameworks."""
