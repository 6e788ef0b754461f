-- toxmail bridge schema 9: when each identity's node last saw each peer come online or go offline,
-- written by the running bridge as its couriers report it, read by `toxmail-bridge queue list/show`
-- to say why a copy waits ("peer offline since ..."). Not mail data: one row per (identity, peer).
CREATE TABLE peer_presence (
    identity text NOT NULL,
    peer_key bytea NOT NULL CHECK (octet_length(peer_key) = 32),
    online   boolean NOT NULL,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, peer_key)
);
