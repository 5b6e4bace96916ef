-- Schema version 11 (SQLite): spend caps on LLM calls.
-- `campaigns.budget_usd` is the cap (NULL: none). `llm_spend` is the ledger of paid calls:
-- one row per call, keyed by an opaque digest of (lead, request), `reserved` with the call's
-- worst-case cost (nano-USD) before it starts, `spent` with its actual cost once answered.
-- A call is granted only when spent + reserved + its worst case stays within the budget,
-- checked and written in one write transaction (BEGIN IMMEDIATE), so workers in other
-- processes cannot both take the last of it. No personal data: the ledger outlives `forget`.

ALTER TABLE campaigns ADD COLUMN budget_usd REAL;

CREATE TABLE IF NOT EXISTS llm_spend (
    campaign_id         TEXT NOT NULL,
    call_key            TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'reserved',
    reserved_nanousd    INTEGER NOT NULL DEFAULT 0,
    cost_nanousd        INTEGER,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (campaign_id, call_key)
);

INSERT INTO schema_version(version, applied_at)
VALUES (11, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(version) DO NOTHING;
