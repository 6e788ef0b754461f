-- toxmail bridge schema 4: inbound deduplication by (sealing key, message id). A message id alone
-- is attacker-chosen: keyed by it, a stranger who stored an envelope under a pending id made the
-- real sender's copy look delivered (issue 8). Two sealers never share a row now.
ALTER TABLE inbound DROP CONSTRAINT inbound_pkey;
ALTER TABLE inbound ADD PRIMARY KEY (sender_key, message_id);
-- The receiving bridge's verdict on the sealing key versus the claimed envelope sender, decided
-- before the ack and written into Authentication-Results at injection.
ALTER TABLE inbound ADD COLUMN sender_verdict text NOT NULL DEFAULT 'none';
