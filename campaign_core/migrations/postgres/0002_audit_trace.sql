-- Schema version 2 (PostgreSQL, also Supabase): the audit log as a queryable node trace.
-- Every envelope already holds its metadata as JSON; these columns lift out what an
-- operator filters and sorts on (which run and attempt, when, how long, what came
-- out, from which inputs) so that the trail can be queried without parsing JSON.
-- Rows written before this version are back-filled from their envelope.
-- Re-runnable, like every migration here; the SQLite twin is ../sqlite/0002_audit_trace.sql.

ALTER TABLE audit_log
    ADD COLUMN IF NOT EXISTS run_id text,
    ADD COLUMN IF NOT EXISTS attempt integer,
    ADD COLUMN IF NOT EXISTS agent_version text,
    ADD COLUMN IF NOT EXISTS started_at timestamptz,
    ADD COLUMN IF NOT EXISTS ended_at timestamptz,
    ADD COLUMN IF NOT EXISTS duration_ms integer,
    ADD COLUMN IF NOT EXISTS record_count integer,
    ADD COLUMN IF NOT EXISTS outcome text,
    ADD COLUMN IF NOT EXISTS inputs_digest text;

UPDATE audit_log SET
    run_id = envelope -> 'metadata' ->> 'run_id',
    attempt = (envelope -> 'metadata' ->> 'attempt')::integer,
    agent_version = envelope -> 'metadata' ->> 'agent_version',
    started_at = (envelope -> 'metadata' ->> 'started_at')::timestamptz,
    ended_at = (envelope -> 'metadata' ->> 'ended_at')::timestamptz,
    duration_ms = round(extract(epoch FROM ((envelope -> 'metadata' ->> 'ended_at')::timestamptz
                  - (envelope -> 'metadata' ->> 'started_at')::timestamptz)) * 1000)::integer,
    record_count = jsonb_array_length(envelope -> 'records')
WHERE run_id IS NULL;

CREATE INDEX IF NOT EXISTS audit_campaign_time ON audit_log(campaign_id, created_at);
CREATE INDEX IF NOT EXISTS drafts_approved ON drafts(campaign_id, approved, lead_id);

INSERT INTO schema_version(version) VALUES (2) ON CONFLICT (version) DO NOTHING;
