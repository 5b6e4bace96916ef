-- Schema version 10 (SQLite): who is due when in a sequence of follow-ups.
-- One row per (campaign, lead, step) after step 1: written `scheduled` with its due time
-- when the previous step is sent, then `sent`, `stopped` (with `stop_reason`: replied,
-- unsubscribed, suppressed, bounced, complained, excluded, cancelled) or `failed`.
-- The delivery orchestrator pages the scheduled rows that are due and sleeps until the
-- earliest next one: the store holds who is due when, the workflow holds the clock.

CREATE TABLE IF NOT EXISTS sequence_steps (
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT NOT NULL,
    step            INTEGER NOT NULL,
    due_at          TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'scheduled',
    stop_reason     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, lead_id, step)
);
CREATE INDEX IF NOT EXISTS sequence_steps_due ON sequence_steps(campaign_id, status, due_at);

INSERT INTO schema_version(version, applied_at)
VALUES (10, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
