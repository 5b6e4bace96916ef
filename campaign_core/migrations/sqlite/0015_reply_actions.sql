-- Schema version 15 (SQLite): what is done with each classified reply (issue 27).
-- `replies.headers`: JSON text of the few headers the reply classifier reads (Date,
-- Auto-Submitted, X-Autoreply, Precedence...), written by the desk when it records the
-- message. `snooze_until`: a `not_now` reply with a date is listed in the inbox again from
-- then ("follow up now"). `done_at` / `done_by`: a person took the reply off the inbox.
-- `intent_by`: the person who set the intent by hand (NULL: the classifier's).
-- `reply_answers`: the answer to a reply, drafted by the agent (`drafted_by` names the
-- writer) and perhaps edited by a person, then sent once (`sending` while one caller sends
-- it). Its subject and body are personal data: it goes with its reply (ON DELETE CASCADE).
-- `suggested_leads`: a contact a reply named ("talk to Maria instead"), with who referred
-- them; nothing is sent to them until a person adds them to a campaign
-- (`added_campaign_id`). Goes with the reply that named them.
-- The PostgreSQL twin is ../postgres/0015_reply_actions.sql.

ALTER TABLE replies ADD COLUMN headers TEXT;
ALTER TABLE replies ADD COLUMN snooze_until TEXT;
ALTER TABLE replies ADD COLUMN done_at TEXT;
ALTER TABLE replies ADD COLUMN done_by TEXT;
ALTER TABLE replies ADD COLUMN intent_by TEXT;
-- The inbox reads the replies not done, newest first.
CREATE INDEX IF NOT EXISTS replies_inbox ON replies(done_at, received_at);

CREATE TABLE IF NOT EXISTS reply_answers (
    reply_id        TEXT PRIMARY KEY REFERENCES replies(reply_id) ON DELETE CASCADE,
    campaign_id     TEXT,
    lead_id         TEXT,
    subject         TEXT NOT NULL DEFAULT '',
    body            TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'drafted'
                    CHECK (status IN ('drafted', 'sending', 'sent')),
    drafted_by      TEXT,
    drafted_at      TEXT,
    edited_by       TEXT,
    edited_at       TEXT,
    sent_by         TEXT,
    sent_at         TEXT,
    message_id      TEXT,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reply_answers_campaign ON reply_answers(campaign_id, lead_id);

CREATE TABLE IF NOT EXISTS suggested_leads (
    id                  TEXT PRIMARY KEY,
    campaign_id         TEXT,
    reply_id            TEXT REFERENCES replies(reply_id) ON DELETE CASCADE,
    referred_by         TEXT,
    name                TEXT,
    email               TEXT,
    created_at          TEXT NOT NULL,
    added_campaign_id   TEXT
);
CREATE INDEX IF NOT EXISTS suggested_leads_campaign ON suggested_leads(campaign_id, created_at);
CREATE INDEX IF NOT EXISTS suggested_leads_email ON suggested_leads(email);

INSERT INTO schema_version(version, applied_at)
VALUES (15, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
