-- Schema version 1 (SQLite): the campaign engine's durable record.
-- Natural keys everywhere so that every write is an idempotent upsert.
-- The PostgreSQL twin with the same version number is ../postgres/0001_init.sql.
-- Each migration records its own version, so it is complete however it is applied.

CREATE TABLE IF NOT EXISTS schema_version (
    version         INTEGER PRIMARY KEY,
    applied_at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id     TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    brief           TEXT NOT NULL DEFAULT '',
    channel         TEXT NOT NULL DEFAULT 'outbox',
    kb_dir          TEXT,
    workflow_id     TEXT NOT NULL,
    stage           TEXT NOT NULL DEFAULT 'drafting',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS leads (
    campaign_id     TEXT NOT NULL REFERENCES campaigns(campaign_id),
    lead_id         TEXT NOT NULL,
    email           TEXT NOT NULL,
    data            TEXT NOT NULL,
    draft_status    TEXT NOT NULL DEFAULT 'pending',
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, lead_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS leads_campaign_email ON leads(campaign_id, email);

CREATE TABLE IF NOT EXISTS retrievals (
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT NOT NULL,
    passages        TEXT NOT NULL,
    envelope_id     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, lead_id)
);

CREATE TABLE IF NOT EXISTS drafts (
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT NOT NULL,
    step            INTEGER NOT NULL DEFAULT 1,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    citations       TEXT NOT NULL,
    provenance      TEXT NOT NULL,
    envelope_id     TEXT NOT NULL,
    approved        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, lead_id, step)
);

CREATE TABLE IF NOT EXISTS approvals (
    campaign_id     TEXT NOT NULL,
    decision_id     TEXT NOT NULL,
    decision        TEXT NOT NULL,
    lead_ids        TEXT,
    decided_by      TEXT NOT NULL,
    note            TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, decision_id)
);

CREATE TABLE IF NOT EXISTS deliveries (
    message_key     TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT NOT NULL,
    step            INTEGER NOT NULL DEFAULT 1,
    channel         TEXT NOT NULL,
    status          TEXT NOT NULL,
    message_id      TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_campaign ON deliveries(campaign_id, lead_id);

CREATE TABLE IF NOT EXISTS suppressions (
    email           TEXT PRIMARY KEY,
    reason          TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_log (
    envelope_id     TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT,
    agent           TEXT NOT NULL,
    envelope        TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_campaign ON audit_log(campaign_id, lead_id);

INSERT INTO schema_version(version, applied_at)
VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
