-- Schema version 8 (PostgreSQL): replies that came back (webhook or IMAP), and the IMAP cursor.
-- One row per message and lead it was matched to; `reply_id` is derived from the
-- message's Message-ID, campaign and lead, so the same message processed twice (a relay's
-- retry, a poll after a crash) is recorded once. A message that matched no lead is kept
-- with no campaign and no lead. `email` (the sender, or a bounce's final recipient),
-- `subject` and `text` (the first lines) are personal data: `forget` erases them.
-- Re-runnable; the SQLite twin is ../sqlite/0008_replies.sql.

CREATE TABLE IF NOT EXISTS replies (
    reply_id        text PRIMARY KEY,
    message_id      text NOT NULL,
    campaign_id     text,
    lead_id         text COLLATE "C",
    step            integer,
    kind            text NOT NULL,
    email           text NOT NULL,
    subject         text NOT NULL DEFAULT '',
    text            text NOT NULL DEFAULT '',
    matched_by      text,
    source          text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS replies_campaign ON replies(campaign_id, lead_id, kind);
CREATE INDEX IF NOT EXISTS replies_message_id ON replies(message_id);
CREATE INDEX IF NOT EXISTS replies_email ON replies(email);
-- Sender matching looks leads up by their stored (normalised) address.
CREATE INDEX IF NOT EXISTS leads_email ON leads(email);
ALTER TABLE replies ENABLE ROW LEVEL SECURITY;

-- Where each IMAP reply mailbox was read up to: its UIDVALIDITY and the last UID done.
-- The key names host, user and mailbox, never the password.
CREATE TABLE IF NOT EXISTS imap_state (
    mailbox         text PRIMARY KEY,
    uidvalidity     bigint NOT NULL,
    last_uid        bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE imap_state ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (8) ON CONFLICT (version) DO NOTHING;
