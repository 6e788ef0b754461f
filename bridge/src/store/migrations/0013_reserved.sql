-- Placeholder on the dsn branch for the migration 13 being written in parallel
-- (identity_lease): replaced by it at merge. Changes nothing.
SELECT 1;
