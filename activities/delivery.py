"""The delivery agent: sends one approved message, exactly once in effect.

A deterministic message key and a delivery row that records how far a send got (`sending`,
`committing`, `sent`) keep a retry from sending twice; suppression is checked at sending.
A send that can never succeed (a permanent refusal, an address the SMTP server cannot
take) ends its row `failed` with the reason at once, and stops the steps after it.
See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.errors import MessageError
from email.message import EmailMessage
from typing import Any

from standardwebhooks import Webhook
from temporalio import activity

from activities.base import Agent, heartbeating, permanent
from activities.channels import (
    Accepted,
    ChannelConfigError,
    ChannelRefused,
    SmtpConfig,
    SmtpUtf8Required,
    parse_smtp_url,
    send_smtp,
    send_webhook,
    webhook_payload,
    write_outbox,
)
from activities.copywriter import follow_up_subject
from activities.history_guard import PrivateReasonError
from activities.rendering import (
    message_id_for,
    render_message,
    unsubscribe_mailto,
    unsubscribe_url,
)
from activities.sequence_agent import stop_reason_at_due, stop_reason_before_first
from campaign_core.answers import (
    ANSWER_COMMITTING,
    ANSWER_SENT,
    AnswerInput,
    AnswerOutcome,
    answer_key,
    reply_subject,
)
from campaign_core.envelope import Record, now_utc
from campaign_core.ids import message_key
from campaign_core.metrics import process_metrics
from campaign_core.models import Channel, DeliverInput, DeliveryOutcome
from campaign_core.sender_assignment import assign, company_key
from campaign_core.senders import SenderRow, SlotGranted
from campaign_core.unsubscribe import Claims, make_token, signing_key
from campaign_core.webhook_signature import DELIVERY_SECRET, WebhookSecretError, signer

#: A subject that replies in a thread (`Re:`, `RE :`, ...).
RE_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)
#: The SMTP row state between "server accepted the envelope" and "server accepted DATA".
COMMITTING = "committing"
UNCONFIRMED = ("unconfirmed: the worker stopped during DATA; not sent again, "
               "to avoid a duplicate")
#: The error type of a recipient that needs SMTPUTF8 on a server without it (not retried).
SMTPUTF8_REQUIRED = "SMTPUTF8Required"
#: The error type of a message that cannot be built for its recipient (not retried).
NOT_RENDERABLE = "MessageNotRenderable"
#: A paused sender's waiting step is looked at again after this long even if no resume
#: signal came (`campaign sender resume` wakes the campaigns at once).
PAUSED_RECHECK = timedelta(hours=6)


class DeliveryAgent(Agent):
    name = "delivery"
    _key: bytes | None = None

    async def _signing_key(self) -> bytes:
        """The unsubscribe-link key, read once per worker (it never changes)."""
        if self._key is None:
            self._key = await signing_key(self.settings, self.store)
        return self._key

    def _check_channel(self, channel: Channel, sender: SenderRow | None = None) -> None:
        """Refuse, permanently, a channel this worker has no configuration for (a sender
        brings its own SMTP server: `_sender_smtp` reads it when it sends)."""
        if channel is Channel.SMTP and sender is not None:
            if sender.transport == "smtp":
                try:
                    self._sender_smtp(sender)
                except ChannelConfigError as err:
                    raise permanent("InvalidInput", str(err)) from err
        elif channel is Channel.SMTP:
            if self.settings.smtp_url is None:
                raise permanent("InvalidInput", "channel 'smtp' needs CAMPAIGN_SMTP_URL")
            try:
                self._smtp_config()
            except ChannelConfigError as err:
                raise permanent("InvalidInput", str(err)) from err
        elif channel is Channel.WEBHOOK:
            if not self.settings.webhook_url:
                raise permanent("InvalidInput", "channel 'webhook' needs CAMPAIGN_WEBHOOK_URL")
            try:
                self._webhook_signer()
            except WebhookSecretError as err:
                raise permanent("InvalidInput", f"channel 'webhook': {err}") from err

    def _smtp_config(self) -> SmtpConfig:
        """CAMPAIGN_SMTP_URL parsed, with CAMPAIGN_SMTP_REQUIRE_TLS (ChannelConfigError if bad)."""
        if self.settings.smtp_url is None:
            raise ChannelConfigError("channel 'smtp' needs CAMPAIGN_SMTP_URL")
        return parse_smtp_url(self.settings.smtp_url.get_secret_value(),
                              require_tls=self.settings.smtp_require_tls)

    def _webhook_signer(self) -> Webhook:
        """The signer of the webhook channel's posts (CAMPAIGN_DELIVERY_WEBHOOK_SECRET)."""
        secret = self.settings.delivery_webhook_secret
        if secret is None:
            raise WebhookSecretError(f"set {DELIVERY_SECRET} (whsec_<base64>): it signs every post")
        return signer(secret.get_secret_value(), DELIVERY_SECRET)

    @activity.defn(name="deliver_message")
    async def deliver_message(self, inp: DeliverInput) -> DeliveryOutcome:
        started = now_utc()
        key = message_key(inp.campaign_id, inp.lead_id, inp.step)
        done = await self.store.get_delivery(key)
        if done and done.status in {"sent", "suppressed"}:
            if done.status == "sent":
                await self._sequence_sent(inp)
            return DeliveryOutcome(lead_id=inp.lead_id, status=done.status,
                                   message_id=done.message_id)
        draft = await self.store.get_draft(inp.campaign_id, inp.lead_id, inp.step)
        if draft is not None and draft.approved and draft.approved_version not in (None, draft.version):
            # Exactly the version that was approved, whatever became of the draft since.
            draft = await self.store.get_draft_version(
                inp.campaign_id, inp.lead_id, inp.step, draft.approved_version)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if inp.step > 1 and lead is not None and (done is None or done.status == "failed"):
            # A follow-up: the stop conditions are read now, at the moment it is due.
            reason = inp.stop_reason or await stop_reason_at_due(
                self.store, inp.campaign_id, lead, inp.step, draft,
                company=inp.stop_on_company_reply)
            if reason is not None:
                await self.store.set_step_status(inp.campaign_id, inp.lead_id, inp.step,
                                                 "stopped", reason)
                return DeliveryOutcome(lead_id=inp.lead_id, status="stopped", stop_reason=reason)
        if draft is None or lead is None or not draft.approved:
            raise permanent("NotFound", f"no approved draft for lead {inp.lead_id}")
        if inp.step == 1 and (done is None or done.status == "failed"):
            # Issue 27: the person replied to another campaign while this one awaited
            # approval (or paced its first sends): no sequence is opened. Recorded on the
            # schedule's row of step 1 (the deliveries table holds what was sent or tried);
            # the report reads it as `stopped` with the reason, and the later steps after it.
            reason = await stop_reason_before_first(self.store, inp.campaign_id, lead)
            if reason is not None:
                await self.store.set_step_status(inp.campaign_id, inp.lead_id, 1,
                                                 "stopped", reason)
                return DeliveryOutcome(lead_id=inp.lead_id, status="stopped", stop_reason=reason)
        common = {"message_key": key, "campaign_id": inp.campaign_id, "lead_id": inp.lead_id,
                  "step": inp.step, "channel": inp.channel.value}

        async def mark(status: str, message_id: str | None = None, error: str | None = None) -> None:
            await self.store.upsert_delivery(
                message_key=key, campaign_id=inp.campaign_id, lead_id=inp.lead_id, step=inp.step,
                channel=inp.channel.value, status=status, message_id=message_id, error=error)

        async def finish(message_id: str, data: dict[str, Any], error: str | None = None
                         ) -> DeliveryOutcome:
            await mark("sent", message_id, error)
            await self._sequence_sent(inp)
            record = Record(
                kind="delivery", key=key,
                data={"status": "sent", "message_id": message_id, "channel": inp.channel.value,
                      **data},
                provenance=self.provenance(f"draft:{draft.envelope_id}", common),
            )
            await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id, "sent")
            return DeliveryOutcome(lead_id=inp.lead_id, status="sent", message_id=message_id,
                                   sender=sending_from.name if sending_from is not None else None)

        async def failed_for_good(error: str) -> None:
            """Row `failed` with the reason, and the sequence stopped after this step:
            the report and the counts then say what became of every step, none `pending`."""
            await mark("failed", error=error)
            if inp.step < inp.steps:
                await self.store.set_step_status(inp.campaign_id, inp.lead_id, inp.step + 1,
                                                 "stopped", f"step {inp.step} failed")

        sender = await self._lead_sender(inp)
        if isinstance(sender, DeliveryOutcome):
            return sender  # its sender was removed: the step is stopped
        sending_from: SenderRow | None = sender  # what `finish` reports
        mail_from = sender.from_addr if sender is not None else self.settings.mail_from
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
        link = unsubscribe_url(self.settings.resolved_public_url, make_token(
            await self._signing_key(), Claims(inp.campaign_id, inp.lead_id, inp.step)))
        references = await self._thread(inp, mail_from)
        try:
            msg = render_message(
                key=key, sender=mail_from, to=lead.email, to_name=name,
                subject=await self._subject(inp, draft.subject), body=draft.body, unsubscribe_url=link,
                mailto=unsubscribe_mailto(mail_from, key),
                postal_address=self.settings.postal_address, references=references,
            )
        except (ValueError, MessageError) as err:
            # Rendering is a pure function of the lead and the draft: a retry fails alike.
            reason = f"the message cannot be built for this address: {type(err).__name__}: {err}"
            await failed_for_good(reason)
            raise PrivateReasonError(
                f"{NOT_RENDERABLE}: the message cannot be built (the reason is in the "
                "delivery record)", type=NOT_RENDERABLE, private=reason) from err
        message_id = str(msg["Message-ID"])
        if done and done.status == COMMITTING:
            # A previous attempt issued DATA and never recorded the reply: see the docstring.
            return await finish(message_id, {"unconfirmed": True}, UNCONFIRMED)
        if await self.store.is_suppressed(lead.email):
            await mark("suppressed")
            return DeliveryOutcome(lead_id=inp.lead_id, status="suppressed")
        self._check_channel(inp.channel, sender)
        if sender is not None:
            waiting = await self._claim(inp, sender, key)
            if waiting is not None:
                return waiting
            self._sign(msg, sender)
        attempt = activity.info().attempt
        await mark("sending", error=(f"attempt {attempt}: retrying an unfinished send"
                                     if done and done.status == "sending" else None))
        try:
            accepted = await heartbeating(self._send(inp, key, lead.email, msg, mark, sender),
                                          details=f"sending via {inp.channel.value}")
        except SmtpUtf8Required as err:
            await failed_for_good(str(err))
            raise permanent(SMTPUTF8_REQUIRED, str(err)) from err
        except ChannelRefused as err:
            if err.permanent and err.mailbox and sender is not None:
                # The login or the mailbox's address refused: every message of this mailbox
                # would fail alike. Pause the sender and hold the step, not fail the lead.
                return await self._mailbox_refused(inp, sender, err, mark, started)
            if err.permanent:
                await failed_for_good(str(err))  # the provider's whole reply: store only
                raise PrivateReasonError(
                    f"{err.summary}: refused (the reply is in the delivery record)",
                    type="DeliveryRejected", private=str(err)) from err
            raise PrivateReasonError(f"{err.summary}: refused for now (retried)",
                                     type="ChannelRefused", private=str(err),
                                     non_retryable=False) from err
        data: dict[str, Any] = {"provider_id": accepted.provider_id, **accepted.detail}
        if inp.channel is Channel.OUTBOX or (sender is not None and sender.transport == "outbox"):
            data = {"file": f"{key}.eml"}
        if sender is not None:
            data["sender"] = sender.name
        return await finish(message_id, data)

    @activity.defn(name="send_answer")
    async def send_answer(self, inp: AnswerInput) -> AnswerOutcome:
        """Send a person's answer to a reply, once: the inbox claimed it (`sending`) before
        starting the workflow; this renders it in their thread (`In-Reply-To` their
        Message-ID, `Re:` their subject unless the reviewer wrote another), sends it over
        the campaign's channel from the lead's sender (else CAMPAIGN_FROM), records it sent
        and writes the audit naming who sent it. A retry after the SMTP commit point (recorded in the audit)
        does not send again. The text and the address never reach history."""
        started = now_utc()
        answer = await self.store.get_reply_answer(inp.reply_id)
        if answer is None:
            raise permanent("NotFound", f"no answer to reply {inp.reply_id}")
        if answer.status == "sent":
            return AnswerOutcome(reply_id=inp.reply_id, status="already_sent",
                                 message_id=answer.message_id)
        reply = await self.store.get_reply(inp.reply_id)
        if reply is None or reply.campaign_id is None or reply.lead_id is None:
            raise permanent("NotFound", f"reply {inp.reply_id} matched no lead")
        campaign = await self.store.get_campaign(reply.campaign_id)
        lead = await self.store.get_lead(reply.campaign_id, reply.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"reply {inp.reply_id}: its campaign or lead is gone")
        channel = Channel(campaign.channel)
        if channel is Channel.WEBHOOK:
            raise permanent("InvalidInput", "answers go by smtp or outbox; this campaign's "
                                            "channel is webhook")
        by = getattr(answer, "sent_by", None) or answer.edited_by or "unknown"
        key = answer_key(inp.reply_id)
        step = reply.step or 1
        ours = await self.store.get_delivery(message_key(reply.campaign_id, reply.lead_id, step))
        references = [m for m in (ours.message_id if ours else None, reply.message_id) if m]
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
        link = unsubscribe_url(self.settings.resolved_public_url, make_token(
            await self._signing_key(), Claims(reply.campaign_id, reply.lead_id, step)))
        sender = await self._answer_sender(reply.campaign_id, reply.lead_id)
        mail_from = sender.from_addr if sender is not None else self.settings.mail_from
        try:
            msg = render_message(
                key=key, sender=mail_from, to=lead.email, to_name=name,
                subject=answer.subject.strip() or reply_subject(reply.subject),
                body=answer.body, unsubscribe_url=link,
                mailto=unsubscribe_mailto(mail_from, key),
                postal_address=self.settings.postal_address, references=references)
        except (ValueError, MessageError) as err:
            raise PrivateReasonError(
                f"{NOT_RENDERABLE}: the answer cannot be built", type=NOT_RENDERABLE,
                private=f"{type(err).__name__}: {err}") from err
        message_id = str(msg["Message-ID"])
        campaign_id, lead_id = reply.campaign_id, reply.lead_id
        common = {"reply_id": inp.reply_id, "campaign_id": campaign_id, "lead_id": lead_id,
                  "channel": channel.value}

        async def audit(kind: str, data: dict[str, Any]) -> None:
            record = Record(kind=kind, key=inp.reply_id,
                            data={**common, "message_id": message_id, "by": by, **data},
                            provenance=self.provenance(f"reply:{inp.reply_id}", common))
            await self.keep(self.envelope(campaign_id, [record], started), lead_id, kind)

        async def finish(data: dict[str, Any]) -> AnswerOutcome:
            await self.store.mark_answer_sent(inp.reply_id, message_id=message_id, by=by)
            await audit(ANSWER_SENT, {"status": "sent", **data})
            return AnswerOutcome(reply_id=inp.reply_id, status="sent", message_id=message_id,
                                 channel=channel.value)

        if await self._answer_committing(reply.campaign_id, reply.lead_id, inp.reply_id):
            # An earlier attempt issued the final `.` and never recorded the reply.
            return await finish({"unconfirmed": True})
        if await self.store.is_suppressed(lead.email):
            raise permanent("Suppressed", "the address is on the suppression list: the "
                                          "answer is not sent")
        self._check_channel(channel, sender)
        if sender is not None:
            self._sign(msg, sender)
        if channel is Channel.OUTBOX or (sender is not None and sender.transport == "outbox"):
            write_outbox(self.settings.outbox_dir, key, msg)
            return await finish({"file": f"{key}.eml"})
        config = self._sender_smtp(sender) if sender is not None else self._smtp_config()

        async def before_data() -> None:
            await audit(ANSWER_COMMITTING, {"status": "committing"})

        async def data_refused(reason: str) -> None:
            del reason

        try:
            accepted = await heartbeating(
                send_smtp(config, msg, recipient=lead.email, before_data=before_data,
                          data_refused=data_refused), details="sending the answer via smtp")
        except SmtpUtf8Required as err:
            raise permanent(SMTPUTF8_REQUIRED, str(err)) from err
        except ChannelRefused as err:
            raise PrivateReasonError(
                f"{err.summary}: the answer was refused"
                + ("" if err.permanent else " for now (retried)"),
                type="DeliveryRejected" if err.permanent else "ChannelRefused",
                private=str(err), non_retryable=err.permanent) from err
        return await finish({"provider_id": accepted.provider_id, **accepted.detail})

    async def _answer_sender(self, campaign_id: str, lead_id: str) -> SenderRow | None:
        """The mailbox an answer leaves from (issue 28): the lead's sender, so the answer
        stays in the thread the person replied to; None (CAMPAIGN_FROM) without one, or
        when it was removed. An answer takes no slot of the mailbox's caps: a person chose
        to send it now, to someone who wrote to us."""
        name = await self.store.lead_sender(campaign_id, lead_id)
        row = await self.store.get_sender(name) if name else None
        return row if row is not None and row.removed_at is None else None

    async def _answer_committing(self, campaign_id: str, lead_id: str, reply_id: str) -> bool:
        """Whether an attempt recorded the SMTP commit point of this answer."""
        for entry in await self.store.audit(campaign_id, lead_id):
            for record in entry.envelope.get("records", []):
                if (isinstance(record, dict) and record.get("kind") == ANSWER_COMMITTING
                        and record.get("key") == reply_id):
                    return True
        return False

    async def _lead_sender(self, inp: DeliverInput) -> SenderRow | DeliveryOutcome | None:
        """The lead's sender (issue 28), or None for a campaign without senders (and the
        webhook channel, which ignores them). A lead whose sender was removed is stopped
        at this step: its thread cannot move to another mailbox."""
        if not inp.senders or inp.channel is Channel.WEBHOOK:
            return None
        name = await self.store.lead_sender(inp.campaign_id, inp.lead_id)
        if name is None:
            name = await self._assign_at_send(inp)
        if name is None:
            return None  # no sender of the campaign can take it: the implicit sender
        row = await self.store.get_sender(name)
        if row is None or row.removed_at is not None:
            reason = f"sender {name} removed"
            await self.store.set_step_status(inp.campaign_id, inp.lead_id, inp.step, "stopped",
                                             reason)
            return DeliveryOutcome(lead_id=inp.lead_id, status="stopped", stop_reason=reason,
                                   sender=name)
        return row

    async def _assign_at_send(self, inp: DeliverInput) -> str | None:
        """A lead that got no sender when it was drafted (none of the campaign's senders
        could take one then) gets one now, from the mailboxes its campaign's other leads
        use that are neither paused nor removed ("assigned at send" on the review pages);
        kept for its whole sequence. None when there is none: CAMPAIGN_FROM sends it."""
        counts = await self.store.sender_assignment_counts(inp.campaign_id)
        usable = []
        for name in counts:
            row = await self.store.get_sender(name)
            if row is not None and row.removed_at is None and not row.paused:
                usable.append(name)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if not usable or lead is None:
            return None
        chosen = assign([(inp.lead_id, company_key(lead.email, lead.company))],
                        dict.fromkeys(usable, 1.0), counts)
        await self.store.assign_senders(inp.campaign_id, chosen)  # only if still none
        return await self.store.lead_sender(inp.campaign_id, inp.lead_id)

    async def _claim(self, inp: DeliverInput, sender: SenderRow, key: str
                     ) -> DeliveryOutcome | None:
        """Take a slot of the sender's capacity for this send (None: send now), or put the
        step on the schedule until its planned slot (`waiting`): a paused sender's until it
        is resumed, re-checked every PAUSED_RECHECK meanwhile."""
        from campaign_core.sender_capacity import claim_slot

        now = max(now_utc(), inp.now) if inp.now is not None else now_utc()
        row = await self.store.get_step(inp.campaign_id, inp.lead_id, inp.step)
        planned = row is not None and row.status == "scheduled" and row.wait_reason == "capacity"
        slot = await claim_slot(self.store, sender, message_key=key, campaign_id=inp.campaign_id,
                                lead_id=inp.lead_id, now=now, was_planned=planned)
        if isinstance(slot, SlotGranted):
            return None
        due = slot.next_slot if slot.next_slot is not None else now + PAUSED_RECHECK
        await self.store.defer_step(inp.campaign_id, inp.lead_id, inp.step, due, sender.name,
                                    slot.reason)
        return DeliveryOutcome(lead_id=inp.lead_id, status="waiting", sender=sender.name,
                               next_slot=slot.next_slot, stop_reason=slot.reason)

    async def _mailbox_refused(self, inp: DeliverInput, sender: SenderRow,
                               err: ChannelRefused, mark: Callable[..., Awaitable[None]],
                               started: datetime) -> DeliveryOutcome:
        """The sender's SMTP server refused the mailbox itself (its login, or MAIL FROM):
        a password changed or revoked, a From the server will not send as. Instead of
        failing every lead of the mailbox one by one, the sender pauses itself (the reason
        in `sender list`, `status`, the audit and the metric; the provider's words stay in
        the delivery record) and this step waits with its mailbox's other sends until a
        person fixes it and runs `campaign sender resume`."""
        reason = (f"its SMTP server refused the mailbox ({err.summary} at login or MAIL "
                  "FROM): every message would be refused; fix its login or address, then "
                  f"`campaign sender resume {sender.name}`")
        await mark("sending", error=f"held: sender {sender.name} paused: {err}")
        if await self.store.set_sender_paused(sender.name, True, reason, if_not_paused=True):
            record = Record(kind="sender_paused", key=sender.name, data={
                "sender": sender.name, "by": "delivery", "reason": reason,
                "smtp": err.summary}, provenance=self.provenance(
                    f"smtp:{err.summary}", {"sender": sender.name, "lead": inp.lead_id}))
            await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id,
                            f"sender {sender.name} paused: {err.summary}")
            activity.logger.warning("sender %s paused itself: %s", sender.name, err.summary)
            process_metrics().sender_paused(sender.name)
        await self.store.defer_step(inp.campaign_id, inp.lead_id, inp.step,
                                    now_utc() + PAUSED_RECHECK, sender.name, "paused")
        return DeliveryOutcome(lead_id=inp.lead_id, status="waiting", sender=sender.name,
                               stop_reason="paused")

    def _sender_smtp(self, sender: SenderRow) -> SmtpConfig:
        """The sender's SMTP server, its URL unsealed now (ChannelConfigError if it cannot
        be: a variable unset, a key missing)."""
        from campaign_core.secret_refs import SecretRefError, unseal

        if sender.smtp_url is None:
            raise ChannelConfigError(f"sender {sender.name} has no SMTP URL")
        try:
            url = unseal(sender.smtp_url, self.settings)
        except SecretRefError as err:
            raise ChannelConfigError(f"sender {sender.name}: {err}") from err
        return parse_smtp_url(url, require_tls=self.settings.smtp_require_tls)

    def _sign(self, msg: EmailMessage, sender: SenderRow) -> None:
        """DKIM-sign the message with the sender's key, after every other header is set."""
        if sender.dkim_key is None or sender.dkim_selector is None:
            return
        from campaign_core.dkim_sign import sign_message
        from campaign_core.secret_refs import SecretRefError, unseal

        try:
            key_pem = unseal(sender.dkim_key, self.settings)
        except SecretRefError as err:
            raise permanent("InvalidInput", f"sender {sender.name}'s DKIM key: {err}") from err
        try:
            sign_message(msg, selector=sender.dkim_selector, domain=sender.domain,
                         key_pem=key_pem)
        except ValueError as err:  # an unusable key: no retry fixes it
            raise permanent("InvalidInput", f"sender {sender.name}'s DKIM key: {err}") from err

    async def _sequence_sent(self, inp: DeliverInput) -> None:
        """Record a sent follow-up and put the next step on the schedule (idempotent)."""
        if inp.step > 1:
            await self.store.set_step_status(inp.campaign_id, inp.lead_id, inp.step, "sent")
        elif inp.senders:
            # Step 1 waited on the schedule for its mailbox: off the schedule now.
            row = await self.store.get_step(inp.campaign_id, inp.lead_id, 1)
            if row is not None and row.status == "scheduled":
                await self.store.set_step_status(inp.campaign_id, inp.lead_id, 1, "sent")
        if inp.next_due_at is not None and inp.step < inp.steps:
            await self.store.schedule_step(inp.campaign_id, inp.lead_id, inp.step + 1,
                                           inp.next_due_at)

    async def _subject(self, inp: DeliverInput, subject: str) -> str:
        """The subject to send: a follow-up's `Re:` subject follows the subject actually
        sent at step 1 (a reviewer may have edited it after the follow-ups were written);
        a follow-up whose subject a reviewer made something else keeps it."""
        if inp.step == 1 or not RE_PREFIX.match(subject):
            return subject
        first = await self.store.get_draft(inp.campaign_id, inp.lead_id, 1)
        if first is None:
            return subject
        if first.approved_version not in (None, first.version):
            first = await self.store.get_draft_version(
                inp.campaign_id, inp.lead_id, 1, first.approved_version) or first
        return follow_up_subject(first.subject)

    async def _thread(self, inp: DeliverInput, mail_from: str) -> list[str]:
        """The Message-IDs of the earlier steps, oldest first: a follow-up replies to them."""
        ids = []
        for step in range(1, inp.step):
            earlier = await self.store.get_delivery(message_key(inp.campaign_id, inp.lead_id, step))
            ids.append(earlier.message_id if earlier and earlier.message_id else message_id_for(
                message_key(inp.campaign_id, inp.lead_id, step), mail_from))
        return ids

    async def _send(self, inp: DeliverInput, key: str, recipient: str, msg: EmailMessage,
                    mark: Callable[..., Awaitable[None]], sender: SenderRow | None = None
                    ) -> Accepted:
        outbox = sender is not None and sender.transport == "outbox"
        if inp.channel is Channel.OUTBOX or (inp.channel is Channel.SMTP and outbox):
            write_outbox(self.settings.outbox_dir, key, msg)
            return Accepted()
        if inp.channel is Channel.SMTP:
            # checked by _check_channel
            config = self._sender_smtp(sender) if sender is not None else self._smtp_config()

            async def before_data() -> None:
                await mark(COMMITTING)

            async def data_refused(reason: str) -> None:
                await mark("sending", error=reason)

            return await send_smtp(config, msg, recipient=recipient, before_data=before_data,
                                   data_refused=data_refused)
        assert self.settings.webhook_url is not None  # checked by _check_channel
        payload = webhook_payload(msg, key=key, campaign_id=inp.campaign_id, lead_id=inp.lead_id,
                                  step=inp.step, recipient=recipient)
        return await send_webhook(self.settings.webhook_url.get_secret_value(), payload, key=key,
                                  signer=self._webhook_signer())
