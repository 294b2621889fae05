-- The deliveries senders hold right now, by webhook: a claim counts them to cap how many go to
-- one endpoint and to one user's endpoints at once. Leases are cleared when an attempt ends,
-- so this index stays as small as the work in flight.
CREATE INDEX deliveries_leased ON webhook.deliveries (webhook_id) WHERE lease_owner IS NOT NULL;
