-- toxmail bridge schema 8: the notifier sleeps until the next "delayed" notice is due, which it
-- reads as the oldest queued copy not yet told about; this keeps that read off delivered rows.
CREATE INDEX outbound_delay_notice ON outbound (created) WHERE state = 'queued' AND NOT delay_notified;
