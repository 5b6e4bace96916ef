-- Schema version 8 (SQLite): replies that came back (webhook or IMAP), and the IMAP cursor.
-- One row per message and lead it was matched to; `reply_id` is derived from the
-- message's Message-ID, campaign and lead, so the same message processed twice (a relay's
-- retry, a poll after a crash) is recorded once. A message that matched no lead is kept
-- with no campaign and no lead. `email` (the sender, or a bounce's final recipient),
-- `subject` and `text` (the first lines) are personal data: `forget` erases them.
-- The PostgreSQL twin is ../postgres/0008_replies.sql.

CREATE TABLE IF NOT EXISTS replies (
    reply_id        TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL,
    campaign_id     TEXT,
    lead_id         TEXT,
    step            INTEGER,
    kind            TEXT NOT NULL,
    email           TEXT NOT NULL,
    subject         TEXT NOT NULL DEFAULT '',
    text            TEXT NOT NULL DEFAULT '',
    matched_by      TEXT,
    source          TEXT NOT NULL,
    received_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_campaign ON replies(campaign_id, lead_id, kind);
CREATE INDEX IF NOT EXISTS replies_message_id ON replies(message_id);
CREATE INDEX IF NOT EXISTS replies_email ON replies(email);
-- Sender matching looks leads up by their stored (normalised) address.
CREATE INDEX IF NOT EXISTS leads_email ON leads(email);

-- Where each IMAP reply mailbox was read up to: its UIDVALIDITY and the last UID done.
-- The key names host, user and mailbox, never the password.
CREATE TABLE IF NOT EXISTS imap_state (
    mailbox         TEXT PRIMARY KEY,
    uidvalidity     INTEGER NOT NULL,
    last_uid        INTEGER NOT NULL,
    updated_at      TEXT NOT NULL
);

INSERT INTO schema_version(version, applied_at)
VALUES (8, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
