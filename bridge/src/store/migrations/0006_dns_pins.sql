-- toxmail bridge schema 6: Tox keys learned from DNS, pinned on first use. A later DNS answer
-- with another key (or none) for a pinned address is refused until the operator accepts it;
-- what was seen instead is kept in pending_key for `toxmail-bridge pins list`.
CREATE TABLE dns_pins (
    address       text PRIMARY KEY,
    public_key    bytea NOT NULL CHECK (octet_length(public_key) = 32),
    pinned        timestamptz NOT NULL DEFAULT now(),
    -- The Tox ID DNS gave instead (NULL with changed_since set: no usable record at all).
    pending_id    bytea CHECK (pending_id IS NULL OR octet_length(pending_id) = 38),
    changed_since timestamptz
);
