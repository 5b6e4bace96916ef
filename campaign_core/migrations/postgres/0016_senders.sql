-- Schema version 16 (PostgreSQL): senders, the mailboxes a campaign sends from (issue 28).
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
-- Re-runnable; the SQLite twin is ../sqlite/0016_senders.sql.

CREATE TABLE IF NOT EXISTS senders (
    name            text COLLATE "C" PRIMARY KEY,
    from_addr       text NOT NULL,
    transport       text NOT NULL CHECK (transport IN ('smtp', 'outbox')),
    smtp_url        text,
    imap_url        text,
    daily_cap       integer NOT NULL,
    hourly_cap      integer NOT NULL,
    min_gap_seconds integer NOT NULL,
    ramp_start      integer,
    ramp_step       integer,
    dkim_selector   text,
    dkim_key        text,
    paused          boolean NOT NULL DEFAULT false,
    paused_reason   text,
    paused_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
ALTER TABLE senders ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS sender_sends (
    sender          text COLLATE "C" NOT NULL,
    seq             bigint NOT NULL,
    message_key     text NOT NULL UNIQUE,
    campaign_id     text,
    lead_id         text COLLATE "C",
    sent_at         timestamptz NOT NULL,
    day_number      integer NOT NULL DEFAULT 1,
    bounced         boolean NOT NULL DEFAULT false,
    complained      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (sender, seq)
);
-- The caps read a mailbox's sends of the last 24 hours.
CREATE INDEX IF NOT EXISTS sender_sends_time ON sender_sends(sender, sent_at);
-- An erasure finds a lead's sends.
CREATE INDEX IF NOT EXISTS sender_sends_lead ON sender_sends(campaign_id, lead_id);
ALTER TABLE sender_sends ENABLE ROW LEVEL SECURITY;

ALTER TABLE leads ADD COLUMN IF NOT EXISTS sender text;
ALTER TABLE sequence_steps ADD COLUMN IF NOT EXISTS sender text;
ALTER TABLE sequence_steps ADD COLUMN IF NOT EXISTS wait_reason text
    CHECK (wait_reason IN ('capacity', 'paused'));
-- Where a mailbox's next waiting send is planned (`planned_waits`), and a resumed
-- mailbox's held sends (`release_sender_holds`).
CREATE INDEX IF NOT EXISTS sequence_steps_waits ON sequence_steps(sender, wait_reason, due_at);

INSERT INTO schema_version(version) VALUES (16) ON CONFLICT (version) DO NOTHING;
