-- Schema version 2 (SQLite): the audit log as a queryable node trace.
-- Every envelope already holds its metadata as JSON; these columns lift out what an
-- operator filters and sorts on (which run and attempt, when, how long, what came
-- out, from which inputs) so that the trail can be queried without parsing JSON.
-- Rows written before this version are back-filled from their envelope.

ALTER TABLE audit_log ADD COLUMN run_id TEXT;
ALTER TABLE audit_log ADD COLUMN attempt INTEGER;
ALTER TABLE audit_log ADD COLUMN agent_version TEXT;
ALTER TABLE audit_log ADD COLUMN started_at TEXT;
ALTER TABLE audit_log ADD COLUMN ended_at TEXT;
ALTER TABLE audit_log ADD COLUMN duration_ms INTEGER;
ALTER TABLE audit_log ADD COLUMN record_count INTEGER;
ALTER TABLE audit_log ADD COLUMN outcome TEXT;
ALTER TABLE audit_log ADD COLUMN inputs_digest TEXT;

UPDATE audit_log SET
    run_id = json_extract(envelope, '$.metadata.run_id'),
    attempt = json_extract(envelope, '$.metadata.attempt'),
    agent_version = json_extract(envelope, '$.metadata.agent_version'),
    started_at = json_extract(envelope, '$.metadata.started_at'),
    ended_at = json_extract(envelope, '$.metadata.ended_at'),
    duration_ms = CAST(ROUND((julianday(json_extract(envelope, '$.metadata.ended_at'))
                   - julianday(json_extract(envelope, '$.metadata.started_at'))) * 86400000) AS INTEGER),
    record_count = json_array_length(envelope, '$.records')
WHERE run_id IS NULL;

CREATE INDEX IF NOT EXISTS audit_campaign_time ON audit_log(campaign_id, created_at);
CREATE INDEX IF NOT EXISTS drafts_approved ON drafts(campaign_id, approved, lead_id);

INSERT INTO schema_version(version, applied_at)
VALUES (2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
