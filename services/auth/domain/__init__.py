"""Plain-Python model of accounts, tokens and signing keys: no I/O, no frameworks."""
