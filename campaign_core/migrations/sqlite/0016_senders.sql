-- Schema version 16 (SQLite): senders, the mailboxes a campaign sends from (issue 28).
-- `senders`: one row per mailbox (campaign_core/senders.py, SenderRow). Its secrets
-- (`smtp_url`, `imap_url`, `dkim_key`) are stored as a reference only: `env:VARIABLE`
-- or `enc:...` (sealed with CAMPAIGN_ENCRYPTION_KEY), never in clear. A removed sender
-- keeps its row (`removed_at`): its past sends still count, and its name may be taken
-- again (the row is then replaced).
-- `sender_sends`: every send of a mailbox, from every campaign, appended in order: `seq`
-- is the mailbox's own counter, so two writers that read the same last send collide on
-- the primary key and the loser reads again (the caps are checked against every earlier
-- send). `message_key` is unique: a retried send finds its claim. No address is stored;
-- an erased lead's rows stay (the caps count them) with `lead_id` cleared.
-- `leads.sender`: the sender a lead was given at drafting (it keeps it for its sequence).
-- `sequence_steps.sender` / `wait_reason`: a send that has no capacity waits on the
-- schedule (step 1 too), `capacity` until its planned slot, `paused` until its sender is
-- resumed; cleared when the step is sent or stopped.
-- The PostgreSQL twin is ../postgres/0016_senders.sql.

CREATE TABLE IF NOT EXISTS senders (
    name            TEXT PRIMARY KEY,
    from_addr       TEXT NOT NULL,
    transport       TEXT NOT NULL CHECK (transport IN ('smtp', 'outbox')),
    smtp_url        TEXT,
    imap_url        TEXT,
    daily_cap       INTEGER NOT NULL,
    hourly_cap      INTEGER NOT NULL,
    min_gap_seconds INTEGER NOT NULL,
    ramp_start      INTEGER,
    ramp_step       INTEGER,
    dkim_selector   TEXT,
    dkim_key        TEXT,
    paused          INTEGER NOT NULL DEFAULT 0,
    paused_reason   TEXT,
    paused_at       TEXT,
    created_at      TEXT NOT NULL,
    removed_at      TEXT
);

CREATE TABLE IF NOT EXISTS sender_sends (
    sender          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    message_key     TEXT NOT NULL UNIQUE,
    campaign_id     TEXT,
    lead_id         TEXT,
    sent_at         TEXT NOT NULL,
    day_number      INTEGER NOT NULL DEFAULT 1,
    bounced         INTEGER NOT NULL DEFAULT 0,
    complained      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sender, seq)
);
-- The caps read a mailbox's sends of the last 24 hours.
CREATE INDEX IF NOT EXISTS sender_sends_time ON sender_sends(sender, sent_at);
-- An erasure finds a lead's sends.
CREATE INDEX IF NOT EXISTS sender_sends_lead ON sender_sends(campaign_id, lead_id);

ALTER TABLE leads ADD COLUMN sender TEXT;
ALTER TABLE sequence_steps ADD COLUMN sender TEXT;
ALTER TABLE sequence_steps ADD COLUMN wait_reason TEXT
    CHECK (wait_reason IN ('capacity', 'paused'));
-- Where a mailbox's next waiting send is planned (`planned_waits`), and a resumed
-- mailbox's held sends (`release_sender_holds`).
CREATE INDEX IF NOT EXISTS sequence_steps_waits ON sequence_steps(sender, wait_reason, due_at);

INSERT INTO schema_version(version, applied_at)
VALUES (16, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
