-- Bytes held across all recipients, in one row kept current by triggers on `held`. A deposit
-- locks this row first and checks `[policy] total_bytes` against it, so concurrent deposits
-- queue on the row and cannot both pass on the same free space; nor does a deposit have to sum
-- a large table.
CREATE TABLE held_total (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bytes     bigint NOT NULL CHECK (bytes >= 0)
);
INSERT INTO held_total (bytes) SELECT COALESCE(sum(size), 0) FROM held;

CREATE FUNCTION held_total_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE held_total SET bytes = bytes + (SELECT COALESCE(sum(size), 0) FROM added);
    RETURN NULL;
END $$;

CREATE FUNCTION held_total_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE held_total SET bytes = bytes - (SELECT COALESCE(sum(size), 0) FROM removed);
    RETURN NULL;
END $$;

CREATE FUNCTION held_total_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE held_total SET bytes = bytes + (SELECT COALESCE(sum(size), 0) FROM added)
                                        - (SELECT COALESCE(sum(size), 0) FROM removed);
    RETURN NULL;
END $$;

CREATE TRIGGER held_total_on_insert AFTER INSERT ON held
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION held_total_inserted();
CREATE TRIGGER held_total_on_delete AFTER DELETE ON held
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION held_total_deleted();
CREATE TRIGGER held_total_on_update AFTER UPDATE ON held
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION held_total_updated();
