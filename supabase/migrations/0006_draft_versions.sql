-- Schema version 6 (PostgreSQL): reviewers' edits and exclusions, and approval of exact
-- versions. A draft now has a version (1 as written by the copywriter), who last edited
-- it, and whether a reviewer left it out; an approval records the version it approved,
-- and delivery sends exactly that one. Every edit is a row of draft_versions: written as
-- `pending` by the control plane (so the text never travels through Temporal history),
-- then `applied` (with its version number) or `refused` (with the reason) by the
-- campaign workflow. Version 1 is copied there when it is first replaced.
-- Re-runnable; the SQLite twin is ../sqlite/0006_draft_versions.sql.

ALTER TABLE drafts ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS edited_by text;
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS excluded boolean NOT NULL DEFAULT false;
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS approved_version integer;
UPDATE drafts SET approved_version = version WHERE approved AND approved_version IS NULL;

CREATE TABLE IF NOT EXISTS draft_versions (
    edit_id         text PRIMARY KEY,
    campaign_id     text NOT NULL,
    lead_id         text COLLATE "C" NOT NULL,
    step            integer NOT NULL DEFAULT 1,
    version         integer,
    base_version    integer,
    subject         text,
    body            text,
    edited_by       text,
    status          text NOT NULL DEFAULT 'pending',
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS draft_versions_number
    ON draft_versions(campaign_id, lead_id, step, version);
CREATE INDEX IF NOT EXISTS draft_versions_lead ON draft_versions(campaign_id, lead_id);
ALTER TABLE draft_versions ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (6) ON CONFLICT (version) DO NOTHING;
