"""Plain-Python model and rules of payments: no I/O, no frameworks."""
