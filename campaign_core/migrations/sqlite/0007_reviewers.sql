-- Schema version 7 (SQLite): named reviewers and the one-time sign-in codes of the review pages.
-- A reviewer's token is never stored: only its SHA-256 (tokens are 32 random bytes, so a
-- plain hash is as good as a slow one). Removing a reviewer keeps the row (the audit names
-- them) with `removed_at` set; a removed reviewer's token and sessions stop working.
-- A sign-in code (`campaign dev`'s link) is stored as its hash too and deleted when used.

CREATE TABLE IF NOT EXISTS reviewers (
    name            TEXT PRIMARY KEY,
    token_hash      TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    removed_at      TEXT
);

CREATE TABLE IF NOT EXISTS sign_in_codes (
    code_hash       TEXT PRIMARY KEY,
    reviewer        TEXT NOT NULL REFERENCES reviewers(name),
    expires_at      TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

-- The review pages list a campaign's leads in intake order, a page at a time.
CREATE INDEX IF NOT EXISTS leads_review_order ON leads(campaign_id, created_at, lead_id);

INSERT INTO schema_version(version, applied_at)
VALUES (7, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
