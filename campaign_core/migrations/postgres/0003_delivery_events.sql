-- Schema version 3 (PostgreSQL): what recipients' mail systems and people tell us after a send.
-- One row per event (bounce, complaint, unsubscribe), keyed by the event's own id so a
-- provider that delivers the same webhook twice is recorded once. The campaign and lead
-- are filled in when the event names a message we sent; they drive the bounce circuit
-- breaker and the report. The address is kept so `forget` can erase it.
-- Re-runnable; the SQLite twin is ../sqlite/0003_delivery_events.sql.

CREATE TABLE IF NOT EXISTS delivery_events (
    event_id        text PRIMARY KEY,
    kind            text NOT NULL,
    email           text NOT NULL,
    campaign_id     text,
    lead_id         text COLLATE "C",
    message_key     text,
    source          text NOT NULL,
    detail          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS delivery_events_campaign ON delivery_events(campaign_id, kind);
CREATE INDEX IF NOT EXISTS deliveries_message_id ON deliveries(message_id);
ALTER TABLE delivery_events ENABLE ROW LEVEL SECURITY;

-- Secrets every process must share (the key that signs unsubscribe links), created once
-- by whichever process needs one first, when no key is configured in the environment.
CREATE TABLE IF NOT EXISTS signing_keys (
    name            text PRIMARY KEY,
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (3) ON CONFLICT (version) DO NOTHING;
