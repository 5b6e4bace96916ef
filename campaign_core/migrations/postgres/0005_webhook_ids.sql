-- Schema version 5 (PostgreSQL): the `webhook-id` of every signed webhook the API acted on.
-- A sender that retries, or anyone replaying a captured call within its 5-minute
-- timestamp window, presents an id already here: the API answers 200 and acts no more.
-- An id is claimed before acting and released if acting fails, so a retry still acts.
-- Re-runnable; the SQLite twin is ../sqlite/0005_webhook_ids.sql.

CREATE TABLE IF NOT EXISTS webhook_ids (
    webhook_id      text PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE webhook_ids ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (5) ON CONFLICT (version) DO NOTHING;
