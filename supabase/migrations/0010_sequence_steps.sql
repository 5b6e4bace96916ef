-- Schema version 10 (PostgreSQL): who is due when in a sequence of follow-ups.
-- One row per (campaign, lead, step) after step 1: written `scheduled` with its due time
-- when the previous step is sent, then `sent`, `stopped` (with `stop_reason`: replied,
-- unsubscribed, suppressed, bounced, complained, excluded, cancelled) or `failed`.
-- The delivery orchestrator pages the scheduled rows that are due and sleeps until the
-- earliest next one: the store holds who is due when, the workflow holds the clock.
-- Re-runnable; the SQLite twin is ../sqlite/0010_sequence_steps.sql.

CREATE TABLE IF NOT EXISTS sequence_steps (
    campaign_id     text NOT NULL,
    lead_id         text NOT NULL,
    step            integer NOT NULL,
    due_at          timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'scheduled',
    stop_reason     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id, step)
);
CREATE INDEX IF NOT EXISTS sequence_steps_due ON sequence_steps(campaign_id, status, due_at);
ALTER TABLE sequence_steps ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (10) ON CONFLICT (version) DO NOTHING;
