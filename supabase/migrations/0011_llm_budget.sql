-- Schema version 11 (PostgreSQL): spend caps on LLM calls.
-- `campaigns.budget_usd` is the cap (NULL: none). `llm_spend` is the ledger of paid calls:
-- one row per call, keyed by an opaque digest of (lead, request), `reserved` with the call's
-- worst-case cost (nano-USD) before it starts, `spent` with its actual cost once answered.
-- A call is granted only when spent + reserved + its worst case stays within the budget,
-- checked and written in one transaction holding the campaign's row lock (FOR UPDATE), so
-- workers in other processes cannot both take the last of it. The Supabase REST store does
-- the same through `reserve_llm_call` below. No personal data: the ledger outlives `forget`.
-- Re-runnable; the SQLite twin is ../sqlite/0011_llm_budget.sql.

ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS budget_usd double precision;

CREATE TABLE IF NOT EXISTS llm_spend (
    campaign_id         text NOT NULL,
    call_key            text NOT NULL,
    status              text NOT NULL DEFAULT 'reserved',
    reserved_nanousd    bigint NOT NULL DEFAULT 0,
    cost_nanousd        bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, call_key)
);
ALTER TABLE llm_spend ENABLE ROW LEVEL SECURITY;

-- What a campaign has spent and what calls in flight hold (Supabase REST store).
CREATE OR REPLACE FUNCTION llm_spend_totals(p_campaign_id text)
RETURNS TABLE (spent bigint, held bigint)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(SUM(s.cost_nanousd) FILTER (WHERE s.status = 'spent'), 0)::bigint,
           COALESCE(SUM(s.reserved_nanousd) FILTER (WHERE s.status = 'reserved'), 0)::bigint
    FROM llm_spend s WHERE s.campaign_id = p_campaign_id
$$;

-- Reserve `p_amount` nano-USD for one call, iff the campaign's budget allows it, in one
-- transaction under the campaign row's lock; a call already in the ledger (a retried
-- activity) is granted again without a second reservation (Supabase REST store).
CREATE OR REPLACE FUNCTION reserve_llm_call(p_campaign_id text, p_call_key text,
                                            p_amount bigint)
RETURNS TABLE (granted boolean, budget double precision, spent bigint, held bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_budget double precision;
    v_spent bigint;
    v_held bigint;
BEGIN
    SELECT c.budget_usd INTO v_budget FROM campaigns c
    WHERE c.campaign_id = p_campaign_id FOR UPDATE;
    SELECT t.spent, t.held INTO v_spent, v_held FROM llm_spend_totals(p_campaign_id) t;
    IF EXISTS (SELECT 1 FROM llm_spend s WHERE s.campaign_id = p_campaign_id
               AND s.call_key = p_call_key) THEN
        RETURN QUERY SELECT true, v_budget, v_spent, v_held;
        RETURN;
    END IF;
    IF v_budget IS NOT NULL
       AND v_spent + v_held + p_amount > round(v_budget * 1000000000)::bigint THEN
        RETURN QUERY SELECT false, v_budget, v_spent, v_held;
        RETURN;
    END IF;
    INSERT INTO llm_spend(campaign_id, call_key, status, reserved_nanousd)
    VALUES (p_campaign_id, p_call_key, 'reserved', p_amount);
    RETURN QUERY SELECT true, v_budget, v_spent, v_held + p_amount;
END
$$;

INSERT INTO schema_version(version) VALUES (11) ON CONFLICT (version) DO NOTHING;
