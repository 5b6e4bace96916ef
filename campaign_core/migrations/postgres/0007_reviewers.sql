-- Schema version 7 (PostgreSQL): named reviewers and the one-time sign-in codes of the review pages.
-- A reviewer's token is never stored: only its SHA-256 (tokens are 32 random bytes, so a
-- plain hash is as good as a slow one). Removing a reviewer keeps the row (the audit names
-- them) with `removed_at` set; a removed reviewer's token and sessions stop working.
-- A sign-in code (`campaign dev`'s link) is stored as its hash too and deleted when used.
-- `review_page` is the review pages' filtered, searched page of a campaign's leads for the
-- Supabase REST store (one RPC instead of several paged reads); the SQL stores run the same
-- query themselves. Re-runnable; the SQLite twin is ../sqlite/0007_reviewers.sql.

CREATE TABLE IF NOT EXISTS reviewers (
    name            text PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
ALTER TABLE reviewers ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS sign_in_codes (
    code_hash       text PRIMARY KEY,
    reviewer        text NOT NULL REFERENCES reviewers(name),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sign_in_codes ENABLE ROW LEVEL SECURITY;

-- The review pages' page of leads (Supabase REST store): the same query as SqlStore.review_page.
CREATE OR REPLACE FUNCTION review_page(p_campaign_id text, p_status text, p_search text,
                                       p_offset integer, p_limit integer)
RETURNS TABLE (lead_id text, email text, company text, draft_status text, subject text,
               approved boolean, version integer, excluded boolean, total bigint)
LANGUAGE sql STABLE AS $$
    WITH matching AS (
        SELECT l.lead_id, l.email, l.data->>'company' AS company, l.draft_status, d.subject,
               d.approved, d.version, d.excluded, l.created_at
        FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id
             AND d.lead_id = l.lead_id AND d.step = 1
        WHERE l.campaign_id = p_campaign_id
          AND (p_status IS NULL
               OR (p_status = 'approved' AND d.approved)
               OR (p_status = 'excluded' AND d.excluded)
               OR (p_status = 'edited' AND d.version > 1)
               OR (p_status = 'pending' AND l.draft_status IN ('pending', 'drafting'))
               OR (p_status IN ('drafted', 'failed') AND l.draft_status = p_status))
          AND (p_search IS NULL
               OR strpos(lower(l.email), p_search) > 0
               OR strpos(lower(COALESCE(l.data->>'company', '')), p_search) > 0)
    )
    SELECT m.lead_id::text, m.email, m.company, m.draft_status, m.subject, m.approved,
           m.version, m.excluded, (SELECT count(*) FROM matching) AS total
    FROM matching m ORDER BY m.created_at, m.lead_id
    LIMIT greatest(p_limit, 0) OFFSET greatest(p_offset, 0)
$$;

-- The review pages list a campaign's leads in intake order, a page at a time.
CREATE INDEX IF NOT EXISTS leads_review_order ON leads(campaign_id, created_at, lead_id);

INSERT INTO schema_version(version) VALUES (7) ON CONFLICT (version) DO NOTHING;
