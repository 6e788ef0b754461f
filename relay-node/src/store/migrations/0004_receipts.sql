-- Receipts owed to depositors: when a held envelope leaves the mailbox (the recipient acked it, or
-- refused it for good), its depositor is owed a `Released` frame. The row is written in the same
-- transaction that deletes the held envelope, sent when the depositor is online, and deleted once
-- sent. It lives no longer than the envelope would have been held: past that the depositor's own
-- copy has expired and a receipt would change nothing, so the purge drops it.
CREATE TABLE receipts (
    depositor   bytea NOT NULL CHECK (length(depositor) = 32),
    message_id  bytea NOT NULL CHECK (length(message_id) = 32),
    outcome     smallint NOT NULL,
    released_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (depositor, message_id)
);
CREATE INDEX receipts_by_expiry ON receipts (expires_at);
