-- The relay's mailbox: sealed envelopes held for recipients, registrations, daily deposit counters.
-- Only ciphertext and public keys: no mail address, subject or body is ever stored here.
CREATE TABLE held (
    message_id   bytea PRIMARY KEY CHECK (length(message_id) = 32),
    recipient    bytea NOT NULL CHECK (length(recipient) = 32),
    depositor    bytea NOT NULL CHECK (length(depositor) = 32),
    envelope     bytea NOT NULL,
    size         bigint NOT NULL CHECK (size > 0),
    deposited_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX held_by_recipient ON held (recipient, deposited_at);
CREATE INDEX held_by_expiry ON held (expires_at);

CREATE TABLE registrations (
    recipient     bytea PRIMARY KEY CHECK (length(recipient) = 32),
    registered_at timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

CREATE TABLE deposit_usage (
    depositor bytea NOT NULL CHECK (length(depositor) = 32),
    day       date NOT NULL,
    count     integer NOT NULL,
    bytes     bigint NOT NULL,
    PRIMARY KEY (depositor, day)
);
