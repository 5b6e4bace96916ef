-- Schema version 15 (PostgreSQL): what is done with each classified reply (issue 27).
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
-- Re-runnable; the SQLite twin is ../sqlite/0015_reply_actions.sql.

ALTER TABLE replies ADD COLUMN IF NOT EXISTS headers text;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS snooze_until timestamptz;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS done_at timestamptz;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS done_by text;
ALTER TABLE replies ADD COLUMN IF NOT EXISTS intent_by text;
-- The inbox reads the replies not done, newest first.
CREATE INDEX IF NOT EXISTS replies_inbox ON replies(done_at, received_at);

CREATE TABLE IF NOT EXISTS reply_answers (
    reply_id        text PRIMARY KEY REFERENCES replies(reply_id) ON DELETE CASCADE,
    campaign_id     text,
    lead_id         text COLLATE "C",
    subject         text NOT NULL DEFAULT '',
    body            text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'drafted'
                    CHECK (status IN ('drafted', 'sending', 'sent')),
    drafted_by      text,
    drafted_at      timestamptz,
    edited_by       text,
    edited_at       timestamptz,
    sent_by         text,
    sent_at         timestamptz,
    message_id      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reply_answers_campaign ON reply_answers(campaign_id, lead_id);
ALTER TABLE reply_answers ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS suggested_leads (
    id                  text PRIMARY KEY,
    campaign_id         text,
    reply_id            text REFERENCES replies(reply_id) ON DELETE CASCADE,
    referred_by         text,
    name                text,
    email               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    added_campaign_id   text
);
CREATE INDEX IF NOT EXISTS suggested_leads_campaign ON suggested_leads(campaign_id, created_at);
CREATE INDEX IF NOT EXISTS suggested_leads_email ON suggested_leads(email);
ALTER TABLE suggested_leads ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_version(version) VALUES (15) ON CONFLICT (version) DO NOTHING;
