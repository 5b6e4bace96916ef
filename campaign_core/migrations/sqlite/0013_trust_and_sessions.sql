-- Schema version 13 (SQLite): what comes in is trusted only as far as it can be checked.
-- `replies.verified`: 1 when the message is tied to one of our messages (a Message-ID in
-- In-Reply-To/References) or its sender address passed the receiving server's checks
-- (Authentication-Results from CAMPAIGN_TRUSTED_AUTHSERV_ID); 0 for an address-only match
-- nobody vouches for, which changes nothing until a person confirms it. Older rows were acted
-- on, so they read as verified.
-- `reviewers.session_epoch`: signing out (or removing the reviewer) bumps it, and a session
-- cookie minted under an older epoch no longer works, wherever the cookie was copied to.

ALTER TABLE replies ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
ALTER TABLE reviewers ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;

INSERT INTO schema_version(version, applied_at)
VALUES (13, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
