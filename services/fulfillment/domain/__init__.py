"""Plain-Python model and rules of shipments: no I/O, no frameworks."""
