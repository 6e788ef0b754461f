-- toxmail bridge schema 14: what the sender asked for about reports (RFC 3461), per copy.
-- dsn_notify: NOTIFY bits (1 SUCCESS, 2 FAILURE, 4 DELAY, 8 NEVER), NULL when not given (then
-- failure and delay are reported, as before). dsn_orcpt: "rfc822;addr" or "utf-8;xtext".
-- dsn_ret: 'FULL' or 'HDRS'. dsn_envid: the decoded ENVID.
-- dsn_original: the original's header section (or, for RET=FULL, the whole message when small),
-- sealed to the sending identity's own key like every envelope: never plaintext at rest;
-- cleared once no report can need it.
-- success_notice_due: NOTIFY included SUCCESS and the "delivered" report has not gone out yet.
-- A copy whose NOTIFY leaves out DELAY is queued with delay_notified already true.
ALTER TABLE outbound
    ADD COLUMN dsn_notify smallint,
    ADD COLUMN dsn_orcpt text,
    ADD COLUMN dsn_ret text,
    ADD COLUMN dsn_envid text,
    ADD COLUMN dsn_original bytea,
    ADD COLUMN success_notice_due boolean NOT NULL DEFAULT false;
CREATE INDEX outbound_success_notice ON outbound (id)
    WHERE state = 'delivered' AND success_notice_due;
