-- Schema version 12 (SQLite): a sequence's failed steps are drafts too.
-- `drafts.failed_reason` is NULL for a step that passed its checks, else why it failed (a
-- guardrail's reasons, or the error that stopped the writer; the text, when there is one, is
-- kept so a reviewer can fix it by an edit, which clears the reason). A lead with a failed
-- step is held: the campaign approval does not approve it.

ALTER TABLE drafts ADD COLUMN failed_reason TEXT;

INSERT INTO schema_version(version, applied_at)
VALUES (12, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
