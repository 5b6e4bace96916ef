-- Schema version 14 (PostgreSQL): the suppression list says where each entry came from, and
-- replies carry what the reply classifier made of them.
-- `suppressions.source`: `reply` (an unsubscribe asked for in a reply), `unsubscribe_link`
-- (the link's confirmation page), `one_click` (RFC 8058 one-click POST), `mailto` (mail to
-- the List-Unsubscribe address), `bounce`, `complaint`, `manual` (`campaign suppress`,
-- `POST /suppressions`) or `erasure` (`campaign forget`). Older rows get the source their
-- `reason` traces them to; an unsubscribe through the link before schema 14 cannot be told
-- from a one-click one (both wrote `unsubscribe (CAMPAIGN)`) and reads `unsubscribe_link`;
-- anything else reads `manual`.
-- `replies.intent`, `confidence`, `action`: the classifier's reading of a reply (NULL until
-- it has read it).
-- No new table (row-level security is already on for both tables).
-- Re-runnable; the SQLite twin is ../sqlite/0014_suppression_sources.sql.

ALTER TABLE suppressions ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'manual'
    CHECK (source IN ('reply', 'unsubscribe_link', 'one_click', 'mailto', 'bounce',
                      'complaint', 'manual', 'erasure'));
UPDATE suppressions SET source = CASE
    WHEN reason = 'forgotten (erasure request)' THEN 'erasure'
    WHEN reason LIKE 'unsubscribe (mailto,%' THEN 'mailto'
    WHEN reason LIKE 'unsubscribe (%' THEN 'unsubscribe_link'
    WHEN reason LIKE 'bounce (%' THEN 'bounce'
    WHEN reason LIKE 'complaint (%' THEN 'complaint'
    ELSE 'manual' END
WHERE source = 'manual';
-- `campaign suppressions` lists the newest first.
CREATE INDEX IF NOT EXISTS suppressions_created ON suppressions(created_at);

ALTER TABLE replies ADD COLUMN IF NOT EXISTS intent text;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS confidence double precision;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS action text;

INSERT INTO schema_version(version) VALUES (14) ON CONFLICT (version) DO NOTHING;
