-- toxmail bridge schema 7: the outbox of delivery events (docs/events.md). A row is written in the
-- same transaction as the queue change it reports, and only while [events] is enabled; the
-- publisher sends unpublished rows in id order and marks them published after the broker's
-- confirm. event_id is the CloudEvents id: fixed at insert, so a republished event keeps it.
CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type         text NOT NULL,
    time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject      text NOT NULL,
    data         jsonb NOT NULL,
    published_at timestamptz
);
CREATE INDEX events_unpublished ON events (id) WHERE published_at IS NULL;
