-- Schema version 3 (SQLite): what recipients' mail systems and people tell us after a send.
-- One row per event (bounce, complaint, unsubscribe), keyed by the event's own id so a
-- provider that delivers the same webhook twice is recorded once. The campaign and lead
-- are filled in when the event names a message we sent; they drive the bounce circuit
-- breaker and the report. The address is kept so `forget` can erase it.

CREATE TABLE IF NOT EXISTS delivery_events (
    event_id        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    email           TEXT NOT NULL,
    campaign_id     TEXT,
    lead_id         TEXT,
    message_key     TEXT,
    source          TEXT NOT NULL,
    detail          TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_events_campaign ON delivery_events(campaign_id, kind);
CREATE INDEX IF NOT EXISTS deliveries_message_id ON deliveries(message_id);

-- Secrets every process must share (the key that signs unsubscribe links), created once
-- by whichever process needs one first, when no key is configured in the environment.
CREATE TABLE IF NOT EXISTS signing_keys (
    name            TEXT PRIMARY KEY,
    secret          TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

INSERT INTO schema_version(version, applied_at)
VALUES (3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
