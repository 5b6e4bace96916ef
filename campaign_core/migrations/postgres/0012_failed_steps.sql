-- Schema version 12 (PostgreSQL): a sequence's failed steps are drafts too.
-- `drafts.failed_reason` is NULL for a step that passed its checks, else why it failed (a
-- guardrail's reasons, or the error that stopped the writer; the text, when there is one, is
-- kept so a reviewer can fix it by an edit, which clears the reason). A lead with a failed
-- step is held: the campaign approval does not approve it.
-- Re-runnable; the SQLite twin is ../sqlite/0012_failed_steps.sql.

ALTER TABLE drafts ADD COLUMN IF NOT EXISTS failed_reason text;

INSERT INTO schema_version(version) VALUES (12) ON CONFLICT (version) DO NOTHING;
