-- A delivery recorded while an earlier one of the same order to the same webhook is still
-- pending waits behind it (`waiting`), out of the due index, until that one finishes. Before,
-- every claim walked the due rows of every waiting chain (a failing endpoint's backlog), so
-- claims slowed down as the backlog grew.
ALTER TABLE webhook.deliveries ADD COLUMN waiting boolean NOT NULL DEFAULT false;

DROP INDEX webhook.deliveries_due;
CREATE INDEX deliveries_due ON webhook.deliveries (next_attempt_at)
    WHERE state = 'pending' AND NOT waiting;

-- The table churns (every delivery is inserted, updated per attempt, purged): keep its
-- statistics fresh, or a burst of pending rows meets plans made for an empty table.
ALTER TABLE webhook.deliveries SET (
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.02
);
