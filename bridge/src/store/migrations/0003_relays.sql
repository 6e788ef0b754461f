-- toxmail bridge schema 3: relay nodes (docs/relay.md).
-- The relays a peer named in its DNS record when the copy was queued (38-byte Tox IDs, concatenated),
-- and custody: when and where a queued copy was deposited.
ALTER TABLE outbound
    ADD COLUMN relays     bytea NOT NULL DEFAULT ''::bytea CHECK (octet_length(relays) % 38 = 0),
    ADD COLUMN relayed_at timestamptz,
    ADD COLUMN relayed_to text;

-- The relays a peer told us in a RelayList frame (replaced by each new list).
CREATE TABLE peer_relays (
    peer_key bytea NOT NULL CHECK (octet_length(peer_key) = 32),
    relay    bytea NOT NULL CHECK (octet_length(relay) = 38),
    learned  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (peer_key, relay)
);
