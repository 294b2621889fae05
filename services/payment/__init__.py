"""The payment service: one payment outcome per order (captured or declined), at most one
refund. Workers write payments; the API reads them."""
