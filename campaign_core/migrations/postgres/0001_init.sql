-- Schema version 1 (PostgreSQL, also Supabase): the campaign engine's durable record.
-- Natural keys everywhere so that every write is an idempotent upsert.
--
-- Applied by `campaign db migrate` (CAMPAIGN_STORE_URL=postgresql://...) or, for a
-- Supabase project, by the Supabase CLI from supabase/migrations/ (a byte-for-byte
-- copy of this folder). Every statement is re-runnable, and the file records its own
-- version, so it does not matter which of the two applied it, or if both did.
--
-- Row-level security is on for every table and no policy is defined: PostgREST's
-- `anon` and `authenticated` roles see nothing. The engine connects as the tables'
-- owner (`postgres`) or with Supabase's service key (`service_role`, BYPASSRLS).
-- Lead ids compare byte-wise (COLLATE "C"), as in SQLite, so that keyset paging
-- (`lead_id > last ORDER BY lead_id`) walks the same order on both backends.
-- The SQLite twin with the same version number is ../sqlite/0001_init.sql.

CREATE TABLE IF NOT EXISTS schema_version (
    version         integer PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id     text PRIMARY KEY,
    name            text NOT NULL,
    brief           text NOT NULL DEFAULT '',
    channel         text NOT NULL DEFAULT 'outbox',
    kb_dir          text,
    workflow_id     text NOT NULL,
    stage           text NOT NULL DEFAULT 'drafting',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS leads (
    campaign_id     text NOT NULL REFERENCES campaigns(campaign_id),
    lead_id         text COLLATE "C" NOT NULL,
    email           text NOT NULL,
    data            jsonb NOT NULL,
    draft_status    text NOT NULL DEFAULT 'pending',
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS leads_campaign_email ON leads(campaign_id, email);

CREATE TABLE IF NOT EXISTS retrievals (
    campaign_id     text NOT NULL,
    lead_id         text COLLATE "C" NOT NULL,
    passages        jsonb NOT NULL,
    envelope_id     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id)
);

CREATE TABLE IF NOT EXISTS drafts (
    campaign_id     text NOT NULL,
    lead_id         text COLLATE "C" NOT NULL,
    step            integer NOT NULL DEFAULT 1,
    subject         text NOT NULL,
    body            text NOT NULL,
    citations       jsonb NOT NULL,
    provenance      jsonb NOT NULL,
    envelope_id     text NOT NULL,
    approved        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id, step)
);

CREATE TABLE IF NOT EXISTS approvals (
    campaign_id     text NOT NULL,
    decision_id     text NOT NULL,
    decision        text NOT NULL,
    lead_ids        jsonb,
    decided_by      text NOT NULL,
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, decision_id)
);

CREATE TABLE IF NOT EXISTS deliveries (
    message_key     text PRIMARY KEY,
    campaign_id     text NOT NULL,
    lead_id         text COLLATE "C" NOT NULL,
    step            integer NOT NULL DEFAULT 1,
    channel         text NOT NULL,
    status          text NOT NULL,
    message_id      text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deliveries_campaign ON deliveries(campaign_id, lead_id);

CREATE TABLE IF NOT EXISTS suppressions (
    email           text PRIMARY KEY,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_log (
    envelope_id     text PRIMARY KEY,
    campaign_id     text NOT NULL,
    lead_id         text COLLATE "C",
    agent           text NOT NULL,
    envelope        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_campaign ON audit_log(campaign_id, lead_id);

ALTER TABLE schema_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE leads ENABLE ROW LEVEL SECURITY;
ALTER TABLE retrievals ENABLE ROW LEVEL SECURITY;
ALTER TABLE drafts ENABLE ROW LEVEL SECURITY;
ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (1) ON CONFLICT (version) DO NOTHING;
