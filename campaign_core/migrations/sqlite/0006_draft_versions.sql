-- Schema version 6 (SQLite): reviewers' edits and exclusions, and approval of exact versions.
-- A draft now has a version (1 as written by the copywriter), who last edited it, and
-- whether a reviewer left it out; an approval records the version it approved, and
-- delivery sends exactly that one. Every edit is a row of draft_versions: written as
-- `pending` by the control plane (so the text never travels through Temporal history),
-- then `applied` (with its version number) or `refused` (with the reason) by the
-- campaign workflow. Version 1 is copied there when it is first replaced, so no version
-- is ever lost.

ALTER TABLE drafts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE drafts ADD COLUMN edited_by TEXT;
ALTER TABLE drafts ADD COLUMN excluded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drafts ADD COLUMN approved_version INTEGER;
UPDATE drafts SET approved_version = version WHERE approved = 1 AND approved_version IS NULL;

CREATE TABLE IF NOT EXISTS draft_versions (
    edit_id         TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL,
    lead_id         TEXT NOT NULL,
    step            INTEGER NOT NULL DEFAULT 1,
    version         INTEGER,
    base_version    INTEGER,
    subject         TEXT,
    body            TEXT,
    edited_by       TEXT,
    status          TEXT NOT NULL DEFAULT 'pending',
    reason          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS draft_versions_number
    ON draft_versions(campaign_id, lead_id, step, version);

INSERT INTO schema_version(version, applied_at)
VALUES (6, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
