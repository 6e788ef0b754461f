-- toxmail bridge schema 5: keys the operator blocked. A blocked key's friendship is ended, its
-- friend requests are ignored and envelopes it sealed are refused, also through relays.
CREATE TABLE blocked_keys (
    public_key bytea PRIMARY KEY CHECK (octet_length(public_key) = 32),
    added      timestamptz NOT NULL DEFAULT now()
);
