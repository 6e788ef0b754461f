-- toxmail bridge schema 11: retention (issue 12). Delivered copies and finished inbound rows are
-- purged after [queue].retention_days, in small batches; the indexes below let the purge find
-- them, and let the 5 s queue statistics and `queue list` read only the rows still open, however
-- long the delivered history is.

-- The expiry sealed inside an inbound envelope. A finished row is purged only once this has
-- passed (plus a grace), and the inbox acknowledges without storing an envelope that expired that
-- long ago: a replay of a purged message is never injected twice. NULL on rows from before.
ALTER TABLE inbound ADD COLUMN expires timestamptz;

-- Copies still open (queued or failed): the statistics read state, created and relayed_at from
-- the index alone; `queue list` pages through it by id.
CREATE INDEX outbound_open ON outbound (id) INCLUDE (state, created, relayed_at)
    WHERE state <> 'delivered';
-- The purge of delivered copies, oldest delivery first.
CREATE INDEX outbound_delivered ON outbound (delivered_at) WHERE state = 'delivered';
-- The purge of finished inbound rows (injected, or failed and bounced), oldest first.
CREATE INDEX inbound_finished ON inbound (received) WHERE state <> 'pending';
