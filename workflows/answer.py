"""AnswerWorkflow: sends a person's answer to one reply, once.

Started by the inbox (starter/inbox.py) after it claimed the answer in the store, with the
id `answer:<reply_id>` and a reuse policy that refuses a second start, so pressing "send"
again finds this workflow running or closed and sends nothing more. One activity does the
work (`DeliveryAgent.send_answer` on the delivery queue, retried like a campaign's sends and
safe to retry: see activities/delivery.py). History carries the reply's id only.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryAgent
    from campaign_core.answers import AnswerInput, AnswerOutcome
    from workflows.agents import call_agent


@workflow.defn(name="AnswerWorkflow")
class AnswerWorkflow:
    @workflow.run
    async def run(self, inp: AnswerInput) -> AnswerOutcome:
        outcome = await call_agent(DeliveryAgent.send_answer, inp, prefix=inp.queue_prefix,
                                   summary="send the answer to a reply")
        workflow.set_current_details(f"answer {outcome.status}")
        return outcome
