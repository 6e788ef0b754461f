-- The enhanced status (e.g. 5.1.1) a failed copy's DSN reports, decided from the typed error
-- when the copy was given up; NULL for copies failed before this column existed (their DSN
-- falls back to reading the reason).
ALTER TABLE outbound ADD COLUMN failure_status text;
