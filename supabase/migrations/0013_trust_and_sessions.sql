-- Schema version 13 (PostgreSQL): what comes in is trusted only as far as it can be checked.
-- `replies.verified`: true when the message is tied to one of our messages (a Message-ID in
-- In-Reply-To/References) or its sender address passed the receiving server's checks
-- (Authentication-Results from CAMPAIGN_TRUSTED_AUTHSERV_ID); false for an address-only match
-- nobody vouches for, which changes nothing until a person confirms it. Older rows were acted
-- on, so they read as verified.
-- `reviewers.session_epoch`: signing out (or removing the reviewer) bumps it, and a session
-- cookie minted under an older epoch no longer works, wherever the cookie was copied to.
-- Re-runnable; the SQLite twin is ../sqlite/0013_trust_and_sessions.sql.

ALTER TABLE replies ADD COLUMN IF NOT EXISTS verified boolean NOT NULL DEFAULT true;
ALTER TABLE reviewers ADD COLUMN IF NOT EXISTS session_epoch integer NOT NULL DEFAULT 0;

INSERT INTO schema_version(version) VALUES (13) ON CONFLICT (version) DO NOTHING;
