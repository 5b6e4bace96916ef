-- Schema version 9 (PostgreSQL): each campaign's lead-id salt.
-- Lead ids travel through Temporal history; an unsalted hash of campaign and address lets
-- anyone with a candidate address confirm it there. A campaign created from now on gets a
-- salt (derived from a secret kept in this store); rows created before keep NULL, the
-- unsalted scheme, so their leads keep their ids (add-leads, `--id` restarts, forget).
-- Re-runnable; the SQLite twin is ../sqlite/0009_lead_id_salt.sql.

ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS lead_id_salt text;

INSERT INTO schema_version(version) VALUES (9) ON CONFLICT (version) DO NOTHING;
