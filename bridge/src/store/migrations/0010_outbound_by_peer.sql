-- toxmail bridge schema 10: the dispatcher keeps one waiter per (sending identity, peer) and
-- claims that pair's due copies in pages (issue 12); it finds the pairs by a skip scan of this
-- index, and expires copies by the second one, without reading any envelope.
CREATE INDEX outbound_by_peer ON outbound (sender_identity, peer, next_attempt) WHERE state = 'queued';
CREATE INDEX outbound_expiry ON outbound (expires) WHERE state = 'queued';
-- The relay fallback pages through one pair's copies not yet in a relay's custody, by id.
CREATE INDEX outbound_to_deposit ON outbound (sender_identity, peer, id) WHERE state = 'queued' AND relayed_at IS NULL;
