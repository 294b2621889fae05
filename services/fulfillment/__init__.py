"""The fulfillment service: one shipment per fulfilled order. The fulfillment worker writes
shipments; the API reads them."""
