"""Inventory: the product catalog (authoritative prices) and stock."""
