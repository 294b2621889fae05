"""Plain-Python building blocks shared by the domains (no I/O, no framework imports)."""
