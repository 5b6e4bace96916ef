-- Schema version 5 (SQLite): the `webhook-id` of every signed webhook the API acted on.
-- A sender that retries, or anyone replaying a captured call within its 5-minute
-- timestamp window, presents an id already here: the API answers 200 and acts no more.
-- An id is claimed before acting and released if acting fails, so a retry still acts.

CREATE TABLE IF NOT EXISTS webhook_ids (
    webhook_id      TEXT PRIMARY KEY,
    received_at     TEXT NOT NULL
);

INSERT INTO schema_version(version, applied_at)
VALUES (5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
