-- Which bridge owns each identity (several bridges on one database, issue 12 part 5).
-- A bridge takes every lease at once or none, renews them every few seconds, and acts on an
-- identity's rows only while it holds the lease (the fenced statements check owner and expiry).
-- `fence` grows by one at every change of owner; `holder_pid` / `holder_start` name the
-- PostgreSQL session that renews, so a bridge whose session ended (killed, disconnected) loses
-- its leases at once instead of when they expire.
CREATE TABLE identity_lease (
    identity     text PRIMARY KEY,
    owner        text NOT NULL,
    fence        bigint NOT NULL,
    expires      timestamptz NOT NULL,
    holder_pid   integer,
    holder_start timestamptz,
    acquired     timestamptz NOT NULL DEFAULT now(),
    -- For operators: the holder's host name and process id.
    holder_name  text NOT NULL DEFAULT ''
);
