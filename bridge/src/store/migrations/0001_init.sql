-- toxmail bridge schema 1: directory, outbound queue, inbound dedup/injection queue.
-- Mail is stored only as sealed envelopes (bytea); Tox IDs are 38 raw bytes, message ids 32.

CREATE TABLE identities (
    address text PRIMARY KEY,
    tox_id  bytea NOT NULL CHECK (octet_length(tox_id) = 38),
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    address text PRIMARY KEY,
    tox_id  bytea NOT NULL CHECK (octet_length(tox_id) = 38),
    added   timestamptz NOT NULL DEFAULT now()
);

-- One row per (message copy, recipient).
CREATE TABLE outbound (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      bytea NOT NULL CHECK (octet_length(message_id) = 32),
    -- Postfix queue id (XFORWARD IDENT): a retried LMTP transaction must not queue twice.
    idem_key        text,
    recipient       text NOT NULL,
    envelope_sender text NOT NULL,
    sender_identity text NOT NULL,
    peer            bytea NOT NULL CHECK (octet_length(peer) = 38),
    envelope        bytea NOT NULL,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt    timestamptz NOT NULL DEFAULT now(),
    expires         timestamptz NOT NULL,
    created         timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
-- Sealed envelopes are ciphertext: trying to compress them only costs CPU.
ALTER TABLE outbound ALTER COLUMN envelope SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX outbound_idem_key ON outbound (idem_key, recipient) WHERE idem_key IS NOT NULL;
CREATE INDEX outbound_due ON outbound (next_attempt) WHERE state = 'queued';
CREATE INDEX outbound_message_id ON outbound (message_id);

-- One row per received message id, kept after injection (envelope emptied) for deduplication.
CREATE TABLE inbound (
    message_id   bytea PRIMARY KEY CHECK (octet_length(message_id) = 32),
    sender_key   bytea NOT NULL CHECK (octet_length(sender_key) = 32),
    identity     text NOT NULL,
    envelope     bytea NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'injected', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    received     timestamptz NOT NULL DEFAULT now(),
    injected_at  timestamptz,
    last_error   text
);
ALTER TABLE inbound ALTER COLUMN envelope SET STORAGE EXTERNAL;
CREATE INDEX inbound_due ON inbound (next_attempt) WHERE state = 'pending';
