-- toxmail bridge schema 2: remember that a "delayed" DSN went out, so it is sent once.
ALTER TABLE outbound ADD COLUMN delay_notified boolean NOT NULL DEFAULT false;
