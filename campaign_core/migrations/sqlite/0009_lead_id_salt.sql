-- Schema version 9 (SQLite): each campaign's lead-id salt.
-- Lead ids travel through Temporal history; an unsalted hash of campaign and address lets
-- anyone with a candidate address confirm it there. A campaign created from now on gets a
-- salt (derived from a secret kept in this store); rows created before keep NULL, the
-- unsalted scheme, so their leads keep their ids (add-leads, `--id` restarts, forget).

ALTER TABLE campaigns ADD COLUMN lead_id_salt TEXT;

INSERT INTO schema_version(version, applied_at)
VALUES (9, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
