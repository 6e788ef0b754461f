-- Held envelopes keyed by (recipient, message id): a message id is chosen by whoever seals, so
-- one depositor's id must not stand for another's envelope, nor block a different recipient's.
-- A deposit under an id already held for the same recipient from another depositor is refused.
ALTER TABLE held DROP CONSTRAINT held_pkey;
ALTER TABLE held ADD PRIMARY KEY (recipient, message_id);
