"""The review pages (`/review/...`): read, edit, exclude and approve drafts in the browser.

The sequence is the unit: the campaign page lists each lead with every step (its status,
when it goes or went, what happened), finds leads by name, email, company or title
(ignoring case and accents) and by step status, and acts on a selection (approve, with
"send the passing steps" for held leads; exclude; include). The lead page shows every
step with its own editor, guardrail result, versions and a preview of the message as
the recipient gets it (with the From of the lead's sender). Approving the campaign goes
through a confirmation page that names the held leads (a failed step) it will not send.
Each lead shows its sender, and the campaign page the senders' capacity for today
(issue 28, review_senders.py).

Server-rendered (Jinja2, autoescaped) over the same `CampaignManager` as the CLI and the
API, so the campaign workflow's Update validators guard every decision and edit. A page
needs a signed-in reviewer (session cookie, see review_auth.py); every POST must come
from this origin (`Origin`, `Sec-Fetch-Site`) and carry the form's CSRF token. Nothing
is loaded from outside the app: inline CSS, no script (so a confirmation is a page).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.errors import MessageError
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from campaign_core.ids import message_key
from campaign_core.models import Counts, Stage
from campaign_core.store.base import REVIEW_STATUSES
from campaign_core.store.review import STEP_STATUSES
from campaign_core.store.rows import CampaignRow, DraftRow, ReviewDecision, ReviewItem, ReviewStep
from campaign_core.unsubscribe import Claims, make_token, signing_key
from starter.api.deps import manager_of
from starter.api.errors import Handler
from starter.api.page_headers import html_page
from starter.api.review_senders import LeadSenders
from starter.api.review_senders import capacity as sender_capacity
from starter.limits import MAX_BODY, MAX_FORM_BYTES, MAX_PAGE_NUMBER, MAX_STEP, MAX_SUBJECT, MAX_VERSION
from starter.manager import BadInput, CampaignManager, Conflict, NotFound
from starter.review_auth import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    Reviewers,
    Session,
    SessionSigner,
    reviewer_still_valid,
    session_signer,
)

PAGE_SIZE = 50
#: Seconds between refreshes of a page showing a campaign that is drafting or delivering.
LIVE_REFRESH = 5
LIVE_STAGES = frozenset({Stage.DRAFTING, Stage.DELIVERING})

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)

router = APIRouter(prefix="/review", include_in_schema=False)


class PageRefusal(Exception):
    """A request the pages refuse: answered with an HTML page naming the reason."""

    def __init__(self, status: int, message: str, back: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.back = back


@dataclass(frozen=True)
class Viewer:
    """The signed-in reviewer of a request, and the CSRF token of their forms."""

    reviewer: str
    csrf: str
    session: Session


async def _to_sign_in(_: Request, exc: _SignInFirst) -> Response:
    """No (valid) session: to the sign-in page, coming back here afterwards."""
    return RedirectResponse("/review/sign-in?" + urlencode({"next": _safe_next(exc.target)}),
                            status_code=303)


async def _refused(request: Request, exc: PageRefusal) -> HTMLResponse:
    viewer = getattr(request.state, "review_viewer", None)
    return _render("refusal.html", status_code=exc.status, viewer=viewer, title="Not done",
                   error=exc.message, back=exc.back)


def _render(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(f"review/{template}").render(**context)
    return html_page(html, status_code=status_code)


# -- request plumbing --------------------------------------------------------------------------


def _manager(request: Request) -> CampaignManager:
    return manager_of(request)


async def _signer(request: Request) -> SessionSigner:
    """The session signer, read from the store once per app."""
    signer: SessionSigner | None = getattr(request.app.state, "review_signer", None)
    if signer is None:
        signer = await session_signer(_manager(request).store)
        request.app.state.review_signer = signer
    return signer


def _secure(request: Request) -> bool:
    """Whether the pages' cookies carry Secure: always with CAMPAIGN_COOKIE_SECURE=always,
    else when the request came over https. Behind a TLS proxy the scheme is https only if
    uvicorn trusts that proxy's X-Forwarded-Proto (CAMPAIGN_TRUSTED_PROXIES)."""
    return _manager(request).settings.cookie_secure == "always" or request.url.scheme == "https"


async def _viewer(request: Request) -> Viewer:
    """The signed-in reviewer, or a redirect to the sign-in page."""
    signer = await _signer(request)
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        reviewer = await _manager(request).store.get_reviewer(session.reviewer)
        if reviewer_still_valid(reviewer, session):
            viewer = Viewer(session.reviewer, signer.csrf(session.nonce), session)
            request.state.review_viewer = viewer
            return viewer
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise _SignInFirst(target)


class _SignInFirst(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


#: The pages' answers to their own refusals, for the app's exception handlers: a page
#: naming the reason, or the way to the sign-in page.
HANDLERS: dict[int | type[Exception], Handler] = {PageRefusal: _refused, _SignInFirst: _to_sign_in}


def _same_origin(request: Request) -> None:
    """403 unless the POST comes from a page of this origin (a cross-site form cannot)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        raise PageRefusal(403, f"refused: a cross-site request ({site}); use the review pages")
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is None or origin == "null" or origin.split("://", 1)[-1] != host:
        raise PageRefusal(403, "refused: the request does not come from the review pages "
                               "(Origin header missing or from another site)")


async def _raw_form(request: Request) -> str:
    """The urlencoded form's text, read once and at most MAX_FORM_BYTES of it (413 past
    that, decided as the bytes arrive): the gate's cap is the API's, 10 MB by default,
    far more than any form of these pages needs."""
    cached: str | None = getattr(request.state, "review_form", None)
    if cached is not None:
        return cached
    if request.headers.get("content-type", "").split(";")[0].strip() not in {
            "application/x-www-form-urlencoded", ""}:
        raise PageRefusal(415, "refused: send the form as application/x-www-form-urlencoded")
    too_large = PageRefusal(413, f"refused: the form is larger than {MAX_FORM_BYTES:,} bytes "
                                 f"(a draft's body may have at most {MAX_BODY:,} characters)")
    length = request.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    request.state.review_form = raw
    return raw


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form; the first value of each field."""
    raw = await _raw_form(request)
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def _form_lists(request: Request) -> dict[str, list[str]]:
    """The urlencoded form with every value of each field (a selection's ticked leads)."""
    return parse_qs(await _raw_form(request), keep_blank_values=True)


async def _checked_post(request: Request) -> tuple[Viewer, dict[str, str]]:
    """A POST of a signed-in reviewer from this origin with the session's CSRF token."""
    _same_origin(request)
    viewer = await _viewer(request)
    form = await _form(request)
    if not (await _signer(request)).csrf_ok(viewer.session.nonce, form.get("csrf")):
        raise PageRefusal(403, "refused: the form's CSRF token is missing or not this "
                               "session's; reload the page and try again")
    return viewer, form


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a review page of this site only."""
    if target and target.startswith("/review") and not target.startswith("//") and \
            "\\" not in target and not target.startswith("/review/sign-"):
        return target
    return "/review"


def _set_session(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path="/review", httponly=True,
                        samesite="strict", secure=_secure(request))


# -- sign-in and sign-out --------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request, code: str = "", next: str = "/review") -> HTMLResponse:
    """The sign-in form (a token), or the confirmation of a one-time sign-in link (a code).

    The code is exchanged only by the POST, so a link previewer that fetches the URL
    does not use it up."""
    import secrets

    signer = await _signer(request)
    nonce = secrets.token_urlsafe(16)
    response = _render("sign_in.html", csrf=signer.csrf(nonce), code=code[:200],
                       next=_safe_next(next))
    response.set_cookie(PRE_SESSION_COOKIE, nonce, max_age=3600, path="/review/sign-in",
                        httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    _same_origin(request)
    form = await _form(request)
    signer = await _signer(request)
    if not signer.csrf_ok(request.cookies.get(PRE_SESSION_COOKIE), form.get("csrf")):
        raise PageRefusal(403, "refused: the sign-in form has expired or was not sent from "
                               "this site; open the sign-in page again", "/review/sign-in")
    reviewers = Reviewers(_manager(request).store)
    code, token = form.get("code", "").strip(), form.get("token", "").strip()
    reviewer = await (reviewers.redeem(code) if code else reviewers.by_token(token))
    if reviewer is None:
        message = ("This sign-in link is not valid: it was used already, has expired (15 "
                   "minutes) or was never issued. Ask for a new one." if code else
                   "Sign-in refused: that is not an active reviewer's token.")
        raise PageRefusal(401, message, "/review/sign-in")
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    _set_session(response, request, signer.issue(reviewer.name, epoch=reviewer.session_epoch),
                 int(signer.ttl.total_seconds()))
    response.delete_cookie(PRE_SESSION_COOKIE, path="/review/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """End the session on the server, not only in this browser: the reviewer's session
    epoch moves on, so every cookie issued before (one copied elsewhere too, and the
    reviewer's sessions on other devices) stops working."""
    viewer, _ = await _checked_post(request)
    await _manager(request).store.bump_session_epoch(viewer.reviewer)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


# -- campaigns -------------------------------------------------------------------------------


def _progress(stage: Stage, counts: Counts) -> int | None:
    """Percent done while drafting (leads drafted or failed) or delivering (messages, one a
    lead and step, that reached their outcome: the same rows as `report`); never 100 while
    a row is pending."""
    if stage is Stage.DRAFTING and counts.leads:
        done = min(100, math.floor(100 * (counts.drafted + counts.draft_failed) / counts.leads))
        return min(done, 99) if counts.drafted + counts.draft_failed < counts.leads else done
    if stage is Stage.DELIVERING and counts.messages:
        done = math.floor(100 * (counts.messages - counts.pending) / counts.messages)
        return min(done, 99) if counts.pending else min(done, 100)
    return None


@dataclass(frozen=True)
class _Listed:
    row: CampaignRow
    counts: Counts
    progress: int | None


@router.get("")
async def campaigns_page(request: Request) -> Response:
    viewer = await _viewer(request)
    store = _manager(request).store
    listed = []
    for row in await store.list_campaigns():
        counts = await store.counts(row.campaign_id)
        listed.append(_Listed(row, counts, _progress(row.stage, counts)))
    live = any(c.row.stage in LIVE_STAGES for c in listed)
    return _render("campaigns.html", viewer=viewer, campaigns=listed,
                   refresh=LIVE_REFRESH if live else None)


async def _campaign(m: CampaignManager, campaign_id: str) -> CampaignRow:
    row = await m.store.get_campaign(campaign_id)
    if row is None:
        raise PageRefusal(404, f"No campaign {campaign_id!r}.")
    return row


def _writer_note(m: CampaignManager, writer: str | None) -> str | None:
    """Says that the drafts come (or will come) from the offline writer, when they do."""
    if writer == "offline" or (writer is None and m.settings.resolved_llm_provider == "offline"):
        verb = "come" if writer else "will come"
        return (f"Drafts {verb} from the offline writer, a deterministic template writer: no "
                "LLM is configured. Set OPENAI_API_KEY (and CAMPAIGN_LLM_MODEL) for the "
                "workers to have an LLM write them.")
    return None


def _when(value: str | None) -> str:
    """A stored time as the pages show it: `2024-05-01 09:00:03 UTC`."""
    return f"{value[:19].replace('T', ' ')} UTC" if value else ""


@dataclass(frozen=True)
class StepLine:
    """One step as the campaign page and the lead page summarise it."""

    step: int
    status: str  # a short word or two: sent, failed, excluded, awaiting approval...
    when: str  # "sent 2024-... UTC", "due 2024-... UTC", or ""
    what: str  # what happened and why: replied, stopped: unsubscribed, the failure's reason
    failed: bool  # the step failed (its draft, or its send)


def step_line(s: ReviewStep, stage: Stage) -> StepLine:
    """The status, time and outcome of one step, from the report's outcome of its row."""
    what = ", ".join(s.events)
    when = ""
    failed = False
    if s.outcome == "sent":
        status, when = "sent", f"sent {_when(s.sent_at)}" if s.sent_at else "sent"
    elif s.outcome == "stopped":
        status, what = "stopped", ", ".join(filter(None, [s.stop_reason or "", what]))
    elif s.outcome == "failed":
        status, what, failed = "failed", s.error or s.failed_reason or "", True
    elif s.outcome == "not_approved":
        status, what = "not sent: not approved", s.error or ""
        failed = bool(s.failed_reason)
    elif s.outcome in {"excluded", "rejected", "suppressed"}:
        status = s.outcome
    elif s.failed_reason:
        status, what, failed = "failed", s.failed_reason, True
    elif s.excluded:
        status = "excluded"
    elif s.approved:
        status = "approved"
        if s.due_at:
            when = f"due {_when(s.due_at)}"
        elif s.step == 1:
            when = ("goes when delivery starts" if stage is Stage.AWAITING_APPROVAL
                    else "going out")
        else:
            when = "goes after step 1, once its delay has passed"
    else:
        status = "awaiting approval" if stage is Stage.AWAITING_APPROVAL else "drafted"
        if s.due_at:
            when = f"due {_when(s.due_at)}"
    if s.version > 1 and s.outcome not in {"sent"}:
        status += f" · edited (v{s.version})"
    return StepLine(s.step, status, when, what, failed)


def _filters(status: str, step_status: str, q: str) -> dict[str, str]:
    return {k: v for k, v in (("status", status), ("step_status", step_status), ("q", q)) if v}


def _check_filters(status: str, step_status: str) -> None:
    if status and status not in REVIEW_STATUSES:
        raise PageRefusal(422, f"status: {status!r} is not one of {', '.join(REVIEW_STATUSES)}")
    if step_status and step_status not in STEP_STATUSES:
        raise PageRefusal(422, f"step_status: {step_status!r} is not one of "
                               f"{', '.join(STEP_STATUSES)}")


def _campaign_url(campaign_id: str, **query: Any) -> str:
    extra = {k: v for k, v in query.items() if v not in (None, "")}
    return f"/review/campaigns/{quote(campaign_id, safe='')}" + (
        f"?{urlencode(extra)}" if extra else "")


@router.get("/campaigns/{campaign_id}")
async def campaign_page(request: Request, campaign_id: str, page: int = 1, status: str = "",
                        step_status: str = "", q: str = "", done: str = "", n: int = 0,
                        left: int = 0) -> Response:
    viewer = await _viewer(request)
    m = _manager(request)
    campaign = await _campaign(m, campaign_id)
    _check_filters(status, step_status)
    if page > MAX_PAGE_NUMBER:  # the offset must fit the store's integers
        raise PageRefusal(422, f"page: at most {MAX_PAGE_NUMBER:,}", _campaign_url(campaign_id))
    page = max(page, 1)
    q = q[:200]
    found = await m.store.review_page(campaign_id, status=status or None, search=q or None,
                                      step_status=step_status or None,
                                      offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    current = await m.status(campaign_id)
    pages = max(1, math.ceil(found.total / PAGE_SIZE))
    extra = _filters(status, step_status, q)

    def link(number: int) -> str:
        return _campaign_url(campaign_id, **extra, page=number)

    first = (page - 1) * PAGE_SIZE + 1
    lead_senders = LeadSenders(m.store, campaign)
    senders = {i.lead_id: await lead_senders.of(i.lead_id) for i in found.items}
    return _render(
        "campaign.html", viewer=viewer, campaign=campaign, status=current,
        senders=senders, show_senders=any(v is not None for v in senders.values()),
        capacity=await sender_capacity(m.store, m.settings, campaign_id),
        cid_url=quote(campaign_id, safe=""), page=found, page_no=page, pages=pages, link=link,
        first=first, last=first + len(found.items) - 1, statuses=REVIEW_STATUSES,
        step_statuses=STEP_STATUSES, filter_status=status, filter_step=step_status, search=q,
        lines={i.lead_id: [step_line(s, current.stage) for s in i.steps] for i in found.items},
        decisions=[_decision_text(d) for d in found.decisions],
        writer_note=_writer_note(m, current.writer),
        awaiting=current.stage is Stage.AWAITING_APPROVAL,
        message=_done_message(done, n, left), progress=_progress(current.stage, current.counts),
        refresh=LIVE_REFRESH if current.stage in LIVE_STAGES else None)


def _decision_text(d: ReviewDecision) -> str:
    """`Approved by rita on 2024-... UTC: "note"`, and the like."""
    when = f" on {_when(d.decided_at)}" if d.decided_at else ""
    what = {"approve": "Campaign approved" + (
                f" ({d.lead_count} lead(s) named)" if d.lead_count is not None else ""),
            "approve_leads": f"{d.lead_count or 0} lead(s) approved by selection",
            "reject": "Campaign rejected"}.get(d.decision, d.decision)
    note = f': "{d.note}"' if d.note else ""
    return f"{what} by {d.by}{when}{note}"


_DONE = {"approved": "Campaign approved: delivery starts.", "rejected": "Campaign rejected: "
         "nothing will be sent.", "saved": "Draft saved as a new version.",
         "excluded": "Lead excluded: none of its steps will be sent.",
         "included": "Lead included again: all its steps are back in the review.",
         "step_excluded": "Step excluded: it will not be sent.",
         "step_included": "Step included again.",
         "lead_approved": "Lead approved: it is sent with the campaign once the campaign is "
                          "approved."}


def _done_message(done: str, n: int, left: int) -> str | None:
    """The notice after an action; the selection's carry counts."""
    held = (f" {left} held lead(s) (a step failed) were left held: fix the failed step by "
            "an edit, or approve them with \"send the passing steps\"." if left else "")
    if done == "selection_approved":
        return (f"Approved {n} lead(s) of the selection: they are sent with the campaign once "
                f"the campaign is approved.{held}")
    if done == "selection_excluded":
        return f"Excluded {n} lead(s) of the selection: none of their steps will be sent."
    if done == "selection_included":
        return f"Included {n} lead(s) of the selection again."
    return _DONE.get(done)


async def _held(m: CampaignManager, campaign_id: str, limit: int = 200
                ) -> tuple[int, list[dict[str, Any]]]:
    """How many leads are held, and (up to `limit`) each with its failed steps' reasons."""
    ids = await m.held_leads(campaign_id)
    out = []
    for lead_id in ids[:limit]:
        lead = await m.store.get_lead(campaign_id, lead_id)
        failed = [(d.step, d.failed_reason) for d in await m.store.list_lead_drafts(
            campaign_id, lead_id) if d.failed_reason and not d.excluded]
        out.append({"lead_id": lead_id, "email": lead.email if lead else lead_id,
                    "failed": failed})
    return len(ids), out


async def _decide(request: Request, campaign_id: str, decision: str) -> Response:
    """Approve or reject as the signed-in reviewer; a refusal is shown on the campaign page.
    An approval is first confirmed: without `confirm=yes` the answer is the confirmation
    page, which names the held leads that the approval will not send."""
    viewer, form = await _checked_post(request)
    m = _manager(request)
    back = _campaign_url(campaign_id)
    note = (form.get("note") or "").strip()[:2000] or None
    if decision == "approve" and form.get("confirm") != "yes":
        campaign = await _campaign(m, campaign_id)
        current = await m.status(campaign_id)
        held_count, held = await _held(m, campaign_id)
        return _render("confirm.html", viewer=viewer, campaign=campaign, status=current,
                       cid_url=quote(campaign_id, safe=""), note=note or "",
                       held=held, held_count=held_count,
                       awaiting=current.stage is Stage.AWAITING_APPROVAL,
                       writer_note=_writer_note(m, current.writer))
    try:
        if decision == "approve":
            await m.approve(campaign_id, by=viewer.reviewer, note=note)
        else:
            await m.reject(campaign_id, by=viewer.reviewer, reason=form.get("reason") or None)
    except BadInput as err:
        what = "Approval" if decision == "approve" else "Rejection"
        raise PageRefusal(404 if isinstance(err, NotFound) else 409,
                          f"{what} refused: {err}", back) from err
    done = "approved" if decision == "approve" else "rejected"
    return RedirectResponse(_campaign_url(campaign_id, done=done), status_code=303)


@router.post("/campaigns/{campaign_id}/approve")
async def approve(request: Request, campaign_id: str) -> Response:
    return await _decide(request, campaign_id, "approve")


@router.post("/campaigns/{campaign_id}/reject")
async def reject(request: Request, campaign_id: str) -> Response:
    return await _decide(request, campaign_id, "reject")


#: Leads an approval of a selection names per workflow Update.
APPROVE_CHUNK = 1000
#: The most leads one "Exclude selected" / "Include selected" changes (one Update each).
MAX_EXCLUDE = 500


async def _matching(m: CampaignManager, campaign_id: str, form: dict[str, str]) -> list[str]:
    """Every lead id matching the filter the selection form carries."""
    status, step_status = form.get("status", ""), form.get("step_status", "")
    _check_filters(status, step_status)
    ids: list[str] = []
    while True:
        found = await m.store.review_page(
            campaign_id, status=status or None, search=form.get("q", "")[:200] or None,
            step_status=step_status or None, offset=len(ids), limit=APPROVE_CHUNK)
        ids += [i.lead_id for i in found.items]
        if not found.items or len(ids) >= found.total:
            return ids


@router.post("/campaigns/{campaign_id}/selection")
async def selection(request: Request, campaign_id: str) -> Response:
    """Approve, exclude or include the leads ticked on the campaign page, or every lead
    matching its filter ("select all matching the filter")."""
    viewer, form = await _checked_post(request)
    m = _manager(request)
    await _campaign(m, campaign_id)
    filters = _filters(form.get("status", ""), form.get("step_status", ""),
                       form.get("q", "")[:200])
    back = _campaign_url(campaign_id, **filters)
    if form.get("all_matching"):
        lead_ids = await _matching(m, campaign_id, form)
    else:
        lead_ids = list(dict.fromkeys((await _form_lists(request)).get("lead", [])))
    action = form.get("action", "")
    if action not in {"approve", "exclude", "include"}:
        raise PageRefusal(422, "action: one of approve, exclude, include", back)
    if not lead_ids:
        raise PageRefusal(422, "Nothing selected: tick the leads to act on, or \"Select all "
                               "leads matching the filter\".", back)
    try:
        if action == "approve":
            send_passing = bool(form.get("send_passing"))
            held = set(await m.held_leads(campaign_id))
            left = 0 if send_passing else len(held.intersection(lead_ids))
            for i in range(0, len(lead_ids), APPROVE_CHUNK):
                await m.approve_leads(campaign_id, lead_ids[i:i + APPROVE_CHUNK],
                                      by=viewer.reviewer, note=form.get("note") or None,
                                      send_passing=send_passing)
            return RedirectResponse(_campaign_url(
                campaign_id, **filters, done="selection_approved", n=len(lead_ids) - left,
                left=left), status_code=303)
        if len(lead_ids) > MAX_EXCLUDE:
            raise PageRefusal(422, f"{len(lead_ids)} leads selected: exclude or include at most "
                                   f"{MAX_EXCLUDE} at a time (narrow the filter).", back)
        for lead_id in lead_ids:
            await m.set_excluded(campaign_id, lead_id, excluded=action == "exclude", step=None,
                                 by=viewer.reviewer)
    except BadInput as err:
        raise PageRefusal(404 if isinstance(err, NotFound) else 409,
                          f"Not done: {err}", back) from err
    return RedirectResponse(_campaign_url(campaign_id, **filters, done=f"selection_{action}d",
                                          n=len(lead_ids)), status_code=303)


# -- one lead --------------------------------------------------------------------------------


def _lead_fields(lead: Any) -> list[tuple[str, str]]:
    fields = [(name.replace("_", " ").capitalize(), str(getattr(lead, name)))
              for name in ("email", "first_name", "last_name", "company", "title", "website",
                           "timezone", "notes") if getattr(lead, name, None)]
    return fields + [(k, v) for k, v in sorted(lead.custom.items())]


def _citations(draft: DraftRow, claims: list[dict[str, Any]],
               passages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each cited passage with its text (from the lead's retrieval) and the claims it backs."""
    out = []
    for pid in dict.fromkeys([*draft.citations, *(str(c.get("passage_id")) for c in claims)]):
        p = passages.get(pid, {})
        out.append({"passage_id": pid, "title": p.get("title"), "source": p.get("source"),
                    "text": p.get("text"), "claims": [str(c.get("claim", "")) for c in claims
                                                      if str(c.get("passage_id")) == pid]})
    return out


def _notes(draft: DraftRow, data: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the draft came from (its provenance) and what writing it took."""
    keep = ("repaired", "provider", "model", "template", "llm_calls", "cost_usd")
    notes = [(k.replace("_", " "), str(data[k])) for k in keep if data.get(k) is not None]
    notes += [(f"provenance: {k.replace('_', ' ')}", str(v)) for k, v in draft.provenance.items()
              if v not in (None, "", [], {})]
    return notes


#: Record fields that say why something failed or stopped: the audit rows show them.
_REASONS = ("failed_reason", "error", "reason", "stop_reason")


def _audit_rows(entries: list[Any]) -> list[dict[str, str]]:
    rows = []
    for a in entries:
        details = []
        for r in a.envelope.get("records", []):
            data = r.get("data", {}) if isinstance(r, dict) else {}
            who = next((str(data[k]) for k in ("by", "edited_by", "decided_by", "reviewer")
                        if data.get(k)), None)
            step = f" (step {data['step']})" if data.get("step") else ""
            why = "; ".join(str(data[k]) for k in _REASONS if data.get(k))
            details.append(f"{r.get('kind', '')}{step}" + (f" by {who}" if who else "")
                           + (f": {why}" if why else ""))
        rows.append({"when": a.created_at[:19].replace("T", " "), "agent": a.agent,
                     "outcome": a.outcome or "", "details": "; ".join(details)})
    return rows


@dataclass(frozen=True)
class Preview:
    """One step's message as the recipient gets it (rendered as delivery renders it)."""

    sender: str
    to: str
    subject: str
    text: str
    html: Markup


async def _preview(m: CampaignManager, lead: Any, draft: DraftRow, first: DraftRow | None,
                   from_addr: str | None = None) -> Preview | None:
    """Render the step as `DeliveryAgent.deliver_message` does: the lead's sender's From
    (`from_addr`; this server's CAMPAIGN_FROM when the lead has no sender yet), this
    server's postal address and unsubscribe link, a follow-up's `Re:` subject from step 1's
    (as approved), citation markers removed. None when the step has no text to send."""
    from activities.copywriter import follow_up_subject  # the workers' code, loaded on use
    from activities.delivery import RE_PREFIX
    from activities.rendering import render_message, unsubscribe_mailto, unsubscribe_url

    if not draft.body.strip():
        return None
    settings = m.settings
    subject = draft.subject
    if draft.step > 1 and first is not None and RE_PREFIX.match(subject):
        if first.approved_version not in (None, first.version):
            first = await m.store.get_draft_version(
                draft.campaign_id, draft.lead_id, 1, first.approved_version) or first
        subject = follow_up_subject(first.subject)
    key = message_key(draft.campaign_id, draft.lead_id, draft.step)
    token = make_token(await signing_key(settings, m.store),
                       Claims(draft.campaign_id, draft.lead_id, draft.step))
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
    sender = from_addr or settings.mail_from
    try:
        msg = render_message(
            key=key, sender=sender, to=lead.email, to_name=name, subject=subject,
            body=draft.body, unsubscribe_url=unsubscribe_url(settings.resolved_public_url, token),
            mailto=unsubscribe_mailto(sender, key),
            postal_address=settings.postal_address)
    except (ValueError, MessageError):
        return None
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    page = html.get_content() if isinstance(html, EmailMessage) else ""
    inner = page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
    # Safe to embed: render_message escapes every piece of lead and draft text it writes.
    return Preview(sender=str(msg["From"]), to=str(msg["To"]), subject=str(msg["Subject"]),
                   text=text.get_content() if isinstance(text, EmailMessage) else "",
                   html=Markup(inner))


@dataclass
class StepView:
    """Everything the lead page shows of one step."""

    draft: DraftRow
    line: StepLine | None
    summary: ReviewStep | None
    guardrails: str  # "passed", or "failed: <reasons>"
    preview: Preview | None
    citations: list[dict[str, Any]]
    notes: list[tuple[str, str]]
    personal_points: list[str]
    versions: list[Any]
    form_subject: str
    form_body: str
    error: str | None = None

    @property
    def step(self) -> int:
        return self.draft.step

    @property
    def offline(self) -> bool:
        return str(self.draft.provenance.get("source", "")) == "llm:offline"


async def _step_view(m: CampaignManager, lead: Any, draft: DraftRow, first: DraftRow | None,
                     summary: ReviewStep | None, passages: dict[str, dict[str, Any]],
                     stage: Stage, form: dict[str, str] | None, error: str | None,
                     from_addr: str | None = None) -> StepView:
    data: dict[str, Any] = {}
    if draft.envelope_id:
        envelope = await m.store.get_envelope(draft.envelope_id)
        record = next((r for r in envelope.records if r.kind == "draft"), None) if envelope else None
        data = dict(record.data) if record else {}
    claims = [c for c in data.get("claims", []) if isinstance(c, dict)]
    if draft.failed_reason:
        guardrails = f"failed: {draft.failed_reason}"
    elif draft.version > 1:
        guardrails = f"passed (checked on the edit by {draft.edited_by or 'a reviewer'})"
    else:
        guardrails = "passed"
    mine = form is not None and _step_or_none(form) == draft.step
    return StepView(
        draft=draft, line=step_line(summary, stage) if summary else None, summary=summary,
        guardrails=guardrails, preview=await _preview(m, lead, draft, first, from_addr),
        citations=_citations(draft, claims, passages), notes=_notes(draft, data),
        personal_points=[str(p) for p in data.get("personal_points", [])],
        versions=await m.store.list_draft_versions(draft.campaign_id, draft.lead_id, draft.step),
        form_subject=(form or {}).get("subject", draft.subject) if mine else draft.subject,
        form_body=(form or {}).get("body", draft.body) if mine else draft.body,
        error=error if mine else None)


async def _lead_item(m: CampaignManager, campaign_id: str, lead: Any) -> ReviewItem | None:
    """The lead as the campaign page lists it (its steps' outcomes as `report` has them)."""
    found = await m.store.review_page(campaign_id, lead_id=lead.lead_id, limit=1)
    return found.items[0] if found.items else None


@router.get("/campaigns/{campaign_id}/leads/{lead_id}")
async def lead_page(request: Request, campaign_id: str, lead_id: str, done: str = "") -> Response:
    viewer = await _viewer(request)
    return await _lead_response(request, viewer, campaign_id, lead_id, message=_DONE.get(done))


async def _lead_response(request: Request, viewer: Viewer, campaign_id: str, lead_id: str, *,
                         status: int = 200, message: str | None = None,
                         error: str | None = None, form: dict[str, str] | None = None
                         ) -> HTMLResponse:
    m = _manager(request)
    campaign = await _campaign(m, campaign_id)
    lead = await m.store.get_lead(campaign_id, lead_id)
    if lead is None:
        raise PageRefusal(404, f"No lead {lead_id!r} in campaign {campaign_id!r}.",
                          _campaign_url(campaign_id))
    current = await m.status(campaign_id)
    drafts = await m.store.list_lead_drafts(campaign_id, lead_id)
    item = await _lead_item(m, campaign_id, lead)
    summaries = {s.step: s for s in item.steps} if item else {}
    passages = {str(p.get("passage_id")): p
                for p in await m.store.get_retrieval(campaign_id, lead_id)}
    first = next((d for d in drafts if d.step == 1), None)
    sender = await LeadSenders(m.store, campaign).of(lead_id)
    from_addr = sender.from_addr if sender is not None and sender.from_addr else None
    steps = [await _step_view(m, lead, d, first, summaries.get(d.step), passages, current.stage,
                              form, error, from_addr) for d in drafts]
    failed = [s for s in steps if s.draft.failed_reason and not s.draft.excluded]
    return _render(
        "lead.html", status_code=status, viewer=viewer, campaign=campaign, lead=lead,
        cid_url=quote(campaign_id, safe=""), lid_url=quote(lead_id, safe=""),
        fields=_lead_fields(lead), sender=sender, steps=steps, failed=failed, item=item,
        held=bool(item and item.held), any_included=any(not d.excluded for d in drafts),
        any_excluded=any(d.excluded for d in drafts),
        editable=current.stage is Stage.AWAITING_APPROVAL, stage=current.stage.value,
        writer_note=_writer_note(m, current.writer),
        audit=_audit_rows(await m.store.audit(campaign_id, lead_id)),
        lead_error=lead_error(item), message=message, error=error,
        max_subject=MAX_SUBJECT, max_body=MAX_BODY)


def lead_error(item: ReviewItem | None) -> str | None:
    """Why a lead has no draft at all (its drafting failed), if so."""
    if item is None or item.steps:
        return None
    return item.error


def _step_or_none(form: dict[str, str]) -> int | None:
    """The form's step; None when it names none (the action is on every step)."""
    raw = (form.get("step") or "").strip()
    if not raw:
        return None
    try:
        step = int(raw)
    except ValueError:
        raise PageRefusal(422, "step: not a number") from None
    if not 1 <= step <= MAX_STEP:  # a step the store's integers can hold
        raise PageRefusal(422, f"step: must be between 1 and {MAX_STEP}")
    return step


def _lead_url(campaign_id: str, lead_id: str, done: str, step: int | None = None) -> str:
    return (f"/review/campaigns/{quote(campaign_id, safe='')}/leads/{quote(lead_id, safe='')}"
            f"?done={done}" + (f"#step-{step}" if step else ""))


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/edit")
async def edit(request: Request, campaign_id: str, lead_id: str) -> Response:
    viewer, form = await _checked_post(request)
    step = _step_or_none(form) or 1
    form = {**form, "step": str(step)}
    base = form.get("base_version")
    try:
        base_version = int(base) if base else None
    except ValueError:
        raise PageRefusal(422, "base_version: not a number") from None
    if base_version is not None and not 1 <= base_version <= MAX_VERSION:
        raise PageRefusal(422, f"base_version: must be between 1 and {MAX_VERSION}")
    too_long = _too_long(form)
    if too_long:
        # Checked before anything is stored: the API's limits, not the guardrails' later word.
        # The page shows the stored text again, not megabytes of what was sent.
        return await _lead_response(request, viewer, campaign_id, lead_id, status=422,
                                    error=f"Not saved (step {step}): {too_long}",
                                    form={"step": str(step)})
    m = _manager(request)
    try:
        await m.edit_draft(campaign_id, lead_id, step=step, subject=form.get("subject"),
                           body=form.get("body"), by=viewer.reviewer, base_version=base_version)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err)) from err
        # The page again, the text as typed and the reasons beside it: 409 when the
        # campaign or the draft moved on, 422 when the guardrails refused the text.
        return await _lead_response(request, viewer, campaign_id, lead_id,
                                    status=409 if isinstance(err, Conflict) else 422,
                                    error=f"Not saved (step {step}): {err}", form=form)
    return RedirectResponse(_lead_url(campaign_id, lead_id, "saved", step), status_code=303)


def _too_long(form: dict[str, str]) -> str | None:
    """Why the edit's subject or body is longer than an edit may be (the API's limits)."""
    for field, limit in (("subject", MAX_SUBJECT), ("body", MAX_BODY)):
        length = len(form.get(field) or "")
        if length > limit:
            return (f"the {field} is {length:,} characters long; an edit may have at most "
                    f"{limit:,}. Nothing was stored.")
    return None


async def _set_excluded(request: Request, campaign_id: str, lead_id: str, excluded: bool
                        ) -> Response:
    """Exclude or include the lead: every step, or only the form's `step`."""
    viewer, form = await _checked_post(request)
    step = _step_or_none(form)
    m = _manager(request)
    try:
        await m.set_excluded(campaign_id, lead_id, excluded=excluded, step=step,
                             by=viewer.reviewer)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err)) from err
        what = "excluded" if excluded else "included"
        return await _lead_response(request, viewer, campaign_id, lead_id, status=409,
                                    error=f"Not {what}: {err}")
    done = ("excluded" if excluded else "included") if step is None else (
        "step_excluded" if excluded else "step_included")
    return RedirectResponse(_lead_url(campaign_id, lead_id, done, step), status_code=303)


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/exclude")
async def exclude(request: Request, campaign_id: str, lead_id: str) -> Response:
    return await _set_excluded(request, campaign_id, lead_id, True)


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/include")
async def include(request: Request, campaign_id: str, lead_id: str) -> Response:
    return await _set_excluded(request, campaign_id, lead_id, False)


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/approve")
async def approve_lead(request: Request, campaign_id: str, lead_id: str) -> Response:
    """Approve this lead during the review (sent with the campaign once it is approved);
    a held lead only with "send the passing steps"."""
    viewer, form = await _checked_post(request)
    m = _manager(request)
    send_passing = bool(form.get("send_passing"))
    try:
        held = lead_id in await m.held_leads(campaign_id)
        await m.approve_leads(campaign_id, [lead_id], by=viewer.reviewer,
                              note=form.get("note") or None, send_passing=send_passing)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err)) from err
        return await _lead_response(request, viewer, campaign_id, lead_id, status=409,
                                    error=f"Not approved: {err}")
    if held and not send_passing:
        return await _lead_response(
            request, viewer, campaign_id, lead_id, status=409,
            error="Not approved: a step of this lead failed. Fix it by an edit, or tick "
                  "\"Send the passing steps\" to send the others.")
    return RedirectResponse(_lead_url(campaign_id, lead_id, "lead_approved"), status_code=303)


# -- the inbox (issue 27) ----------------------------------------------------------------------

_INBOX_DONE = {"saved": "Answer saved.", "sent": "Answer sent.",
               "already_sent": "The answer was sent already: nothing more was sent.",
               "sending": "The answer is being sent.", "intent": "Intent changed: its action "
               "follows.", "done": "Reply done: it is off the inbox."}


def _inbox_url(reply_id: str, done: str = "") -> str:
    return f"/review/inbox/{quote(reply_id, safe='')}" + (f"?done={done}" if done else "")


@router.get("/inbox")
async def inbox_page(request: Request, intent: str = "", campaign: str = "",
                     done: str = "") -> Response:
    """The replies that need a person, filterable by intent and campaign."""
    from campaign_core.intents import ReplyIntent
    from starter import inbox

    viewer = await _viewer(request)
    m = _manager(request)
    intents = [i.value for i in ReplyIntent]
    if intent and intent not in intents:
        raise PageRefusal(422, f"intent: {intent!r} is not one of {', '.join(intents)}",
                          "/review/inbox")
    campaign = campaign[:64]
    try:
        items = await inbox.inbox(m, campaign_id=campaign or None,
                                  intents=[intent] if intent else None)
    except NotFound as err:
        raise PageRefusal(404, str(err), "/review/inbox") from err
    return _render("inbox.html", viewer=viewer, items=items, intents=intents,
                   campaigns=await m.store.list_campaigns(), filter_intent=intent,
                   filter_campaign=campaign, when=_when, message=_INBOX_DONE.get(done))


@router.get("/inbox/{reply_id}")
async def inbox_reply_page(request: Request, reply_id: str, done: str = "") -> Response:
    viewer = await _viewer(request)
    return await _inbox_reply(request, viewer, reply_id, message=_INBOX_DONE.get(done))


async def _inbox_reply(request: Request, viewer: Viewer, reply_id: str, *, status: int = 200,
                       message: str | None = None, error: str | None = None,
                       form: dict[str, str] | None = None) -> HTMLResponse:
    from campaign_core.answers import reply_subject
    from campaign_core.intents import ReplyIntent
    from starter import inbox

    m = _manager(request)
    reply = await m.store.get_reply(reply_id[:200])
    if reply is None:
        raise PageRefusal(404, f"No reply {reply_id!r}.", "/review/inbox")
    answer = await m.store.get_reply_answer(reply.reply_id)
    campaign = await m.store.get_campaign(reply.campaign_id) if reply.campaign_id else None
    subject = (answer.subject if answer else "") or reply_subject(reply.subject)
    return _render(
        "inbox_reply.html", status_code=status, viewer=viewer, reply=reply, answer=answer,
        rid_url=quote(reply.reply_id, safe=""), thread=await inbox.thread(m, reply),
        why=await inbox.why(m, reply), when=_when, channel=campaign.channel if campaign else "",
        all_intents=[i.value for i in ReplyIntent], stale_form=form is not None,
        form_subject=(form or {}).get("subject", subject),
        form_body=(form or {}).get("body", answer.body if answer else ""),
        max_subject=MAX_SUBJECT, max_body=MAX_BODY, message=message, error=error)


@router.post("/inbox/{reply_id}/answer")
async def inbox_answer(request: Request, reply_id: str) -> Response:
    """Save the edited answer, or send it (once, however often the button is pressed)."""
    from starter import inbox

    viewer, form = await _checked_post(request)
    too_long = _too_long(form)
    if too_long:
        return await _inbox_reply(request, viewer, reply_id, status=422,
                                  error=f"Not saved: {too_long}")
    m = _manager(request)
    subject = form.get("subject") or None
    body = form.get("body") or None
    done: str
    try:
        if form.get("action") == "send":
            sent = await inbox.send_answer(m, reply_id, by=viewer.reviewer, subject=subject,
                                           body=body)
            done = sent.status
        else:
            await inbox.save_answer(m, reply_id, subject=subject, body=body, by=viewer.reviewer)
            done = "saved"
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err), "/review/inbox") from err
        what = "sent" if form.get("action") == "send" else "saved"
        return await _inbox_reply(request, viewer, reply_id,
                                  status=409 if isinstance(err, Conflict) else 422,
                                  error=f"Not {what}: {err}", form=form)
    return RedirectResponse(_inbox_url(reply_id, done), status_code=303)


@router.post("/inbox/{reply_id}/intent")
async def inbox_intent(request: Request, reply_id: str) -> Response:
    from starter import inbox

    viewer, form = await _checked_post(request)
    try:
        await inbox.change_intent(_manager(request), reply_id, form.get("intent", ""),
                                  by=viewer.reviewer)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err), "/review/inbox") from err
        return await _inbox_reply(request, viewer, reply_id, status=409,
                                  error=f"Intent not changed: {err}")
    return RedirectResponse(_inbox_url(reply_id, "intent"), status_code=303)


@router.post("/inbox/{reply_id}/done")
async def inbox_done(request: Request, reply_id: str) -> Response:
    from starter import inbox

    viewer, _ = await _checked_post(request)
    try:
        await inbox.mark_done(_manager(request), reply_id, by=viewer.reviewer)
    except NotFound as err:
        raise PageRefusal(404, str(err), "/review/inbox") from err
    return RedirectResponse("/review/inbox?done=done", status_code=303)
