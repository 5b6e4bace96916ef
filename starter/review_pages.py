"""The review pages (`/review/...`): read, edit, exclude and approve drafts in the browser.

Server-rendered (Jinja2, autoescaped) over the same `CampaignManager` as the CLI and the
API, so the campaign workflow's Update validators guard every decision and edit. A page
needs a signed-in reviewer (session cookie, see review_auth.py); every POST must come
from this origin (`Origin`, `Sec-Fetch-Site`) and carry the form's CSRF token. Nothing
is loaded from outside the app: inline CSS, no script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from campaign_core.models import Counts, Stage
from campaign_core.store.base import REVIEW_STATUSES
from campaign_core.store.rows import CampaignRow, DraftRow
from starter.manager import BadInput, CampaignManager, NotFound
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
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
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


def install(app: FastAPI) -> None:
    """Serve the pages on `app` (the API's, or `campaign dev`'s)."""
    app.include_router(router)
    app.add_exception_handler(PageRefusal, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(_SignInFirst, _to_sign_in)  # type: ignore[arg-type]


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
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    response.headers["Referrer-Policy"] = "same-origin"
    return response


# -- request plumbing --------------------------------------------------------------------------


def _manager(request: Request) -> CampaignManager:
    managers: dict[str, CampaignManager] = request.app.state.managers
    return managers["manager"]


async def _signer(request: Request) -> SessionSigner:
    """The session signer, read from the store once per app."""
    signer: SessionSigner | None = getattr(request.app.state, "review_signer", None)
    if signer is None:
        signer = await session_signer(_manager(request).store)
        request.app.state.review_signer = signer
    return signer


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


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


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form (the gate has capped its size); the first value of each field."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in {
            "application/x-www-form-urlencoded", ""}:
        raise PageRefusal(415, "refused: send the form as application/x-www-form-urlencoded")
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


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
    _set_session(response, request, signer.issue(reviewer.name),
                 int(signer.ttl.total_seconds()))
    response.delete_cookie(PRE_SESSION_COOKIE, path="/review/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    await _checked_post(request)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


# -- campaigns -------------------------------------------------------------------------------


def _progress(stage: Stage, counts: Counts) -> int | None:
    """Percent done while drafting (leads drafted or failed) or delivering (approved sent)."""
    if stage is Stage.DRAFTING and counts.leads:
        return min(100, math.floor(100 * (counts.drafted + counts.draft_failed) / counts.leads))
    if stage is Stage.DELIVERING and counts.approved:
        done = counts.sent + counts.suppressed + counts.send_failed
        return min(100, math.floor(100 * done / counts.approved))
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


@router.get("/campaigns/{campaign_id}")
async def campaign_page(request: Request, campaign_id: str, page: int = 1, status: str = "",
                        q: str = "", done: str = "") -> Response:
    viewer = await _viewer(request)
    m = _manager(request)
    campaign = await _campaign(m, campaign_id)
    if status and status not in REVIEW_STATUSES:
        raise PageRefusal(422, f"status: {status!r} is not one of {', '.join(REVIEW_STATUSES)}")
    page = max(page, 1)
    found = await m.store.review_page(campaign_id, status=status or None, search=q[:200] or None,
                                      offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    current = await m.status(campaign_id)
    pages = max(1, math.ceil(found.total / PAGE_SIZE))
    extra = {k: v for k, v in (("status", status), ("q", q)) if v}

    def link(n: int) -> str:
        return f"/review/campaigns/{quote(campaign_id, safe='')}?" + urlencode({**extra, "page": n})

    first = (page - 1) * PAGE_SIZE + 1
    return _render(
        "campaign.html", viewer=viewer, campaign=campaign, status=current,
        cid_url=quote(campaign_id, safe=""), page=found, page_no=page, pages=pages, link=link,
        first=first, last=first + len(found.items) - 1, statuses=REVIEW_STATUSES,
        filter_status=status, search=q, message=_DONE.get(done),
        progress=_progress(current.stage, current.counts),
        refresh=LIVE_REFRESH if current.stage in LIVE_STAGES else None)


_DONE = {"approved": "Campaign approved: delivery starts.", "rejected": "Campaign rejected: "
         "nothing will be sent.", "saved": "Draft saved as a new version.",
         "excluded": "Lead excluded: it will not be sent.", "included": "Lead included again."}


async def _decide(request: Request, campaign_id: str, decision: str) -> Response:
    """Approve or reject as the signed-in reviewer; a refusal is shown on the campaign page."""
    viewer, form = await _checked_post(request)
    m = _manager(request)
    back = f"/review/campaigns/{quote(campaign_id, safe='')}"
    try:
        if decision == "approve":
            await m.approve(campaign_id, by=viewer.reviewer, note=form.get("note") or None)
        else:
            await m.reject(campaign_id, by=viewer.reviewer, reason=form.get("reason") or None)
    except BadInput as err:
        what = "Approval" if decision == "approve" else "Rejection"
        raise PageRefusal(404 if isinstance(err, NotFound) else 409,
                          f"{what} refused: {err}", back) from err
    done = "approved" if decision == "approve" else "rejected"
    return RedirectResponse(f"{back}?done={done}", status_code=303)


@router.post("/campaigns/{campaign_id}/approve")
async def approve(request: Request, campaign_id: str) -> Response:
    return await _decide(request, campaign_id, "approve")


@router.post("/campaigns/{campaign_id}/reject")
async def reject(request: Request, campaign_id: str) -> Response:
    return await _decide(request, campaign_id, "reject")


# -- one lead --------------------------------------------------------------------------------


def _lead_fields(lead: Any) -> list[tuple[str, str]]:
    fields = [(name.replace("_", " ").capitalize(), str(getattr(lead, name)))
              for name in ("email", "first_name", "last_name", "company", "title", "website",
                           "timezone", "notes") if getattr(lead, name, None)]
    return fields + [(k, v) for k, v in sorted(lead.custom.items())]


async def _citations(m: CampaignManager, draft: DraftRow, claims: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """Each cited passage with its text (from the lead's retrieval) and the claims it backs."""
    passages = {str(p.get("passage_id")): p
                for p in await m.store.get_retrieval(draft.campaign_id, draft.lead_id)}
    out = []
    for pid in dict.fromkeys([*draft.citations, *(str(c.get("passage_id")) for c in claims)]):
        p = passages.get(pid, {})
        out.append({"passage_id": pid, "title": p.get("title"), "source": p.get("source"),
                    "text": p.get("text"), "claims": [str(c.get("claim", "")) for c in claims
                                                      if str(c.get("passage_id")) == pid]})
    return out


def _notes(draft: DraftRow, data: dict[str, Any]) -> list[tuple[str, str]]:
    """Guardrail outcome and where the draft came from (its provenance)."""
    keep = ("guardrails", "repaired", "provider", "model", "template", "llm_calls", "cost_usd")
    notes = [(k.replace("_", " "), str(data[k])) for k in keep if data.get(k) is not None]
    notes += [(f"provenance: {k.replace('_', ' ')}", str(v)) for k, v in draft.provenance.items()
              if v not in (None, "", [], {})]
    return notes


def _audit_rows(entries: list[Any]) -> list[dict[str, str]]:
    rows = []
    for a in entries:
        details = []
        for r in a.envelope.get("records", []):
            data = r.get("data", {}) if isinstance(r, dict) else {}
            who = next((str(data[k]) for k in ("by", "edited_by", "decided_by", "reviewer")
                        if data.get(k)), None)
            details.append(f"{r.get('kind', '')}" + (f" by {who}" if who else ""))
        rows.append({"when": a.created_at[:19].replace("T", " "), "agent": a.agent,
                     "outcome": a.outcome or "", "details": "; ".join(details)})
    return rows


@router.get("/campaigns/{campaign_id}/leads/{lead_id}")
async def lead_page(request: Request, campaign_id: str, lead_id: str, step: int = 1,
                    done: str = "") -> Response:
    viewer = await _viewer(request)
    return await _lead_response(request, viewer, campaign_id, lead_id, step,
                                message=_DONE.get(done))


async def _lead_response(request: Request, viewer: Viewer, campaign_id: str, lead_id: str,
                         step: int, *, status: int = 200, message: str | None = None,
                         error: str | None = None, form: dict[str, str] | None = None
                         ) -> HTMLResponse:
    m = _manager(request)
    campaign = await _campaign(m, campaign_id)
    lead = await m.store.get_lead(campaign_id, lead_id)
    if lead is None:
        raise PageRefusal(404, f"No lead {lead_id!r} in campaign {campaign_id!r}.",
                          f"/review/campaigns/{quote(campaign_id, safe='')}")
    draft = await m.store.get_draft(campaign_id, lead_id, step)
    data: dict[str, Any] = {}
    if draft is not None:
        envelope = await m.store.get_envelope(draft.envelope_id)
        record = next((r for r in envelope.records if r.kind == "draft"), None) if envelope else None
        data = dict(record.data) if record else {}
    current = await m.status(campaign_id)
    version = getattr(draft, "version", None)
    excluded = bool(getattr(draft, "excluded", False))
    claims = [c for c in data.get("claims", []) if isinstance(c, dict)]
    report = {r.lead_id: r for r in await m.store.report(campaign_id)} if draft is None else {}
    return _render(
        "lead.html", status_code=status, viewer=viewer, campaign=campaign, lead=lead, step=step,
        cid_url=quote(campaign_id, safe=""), lid_url=quote(lead_id, safe=""),
        fields=_lead_fields(lead), draft=draft, draft_version=version, excluded=excluded,
        edited_by=getattr(draft, "edited_by", None),
        personal_points=[str(p) for p in data.get("personal_points", [])],
        citations=await _citations(m, draft, claims) if draft else [],
        notes=_notes(draft, data) if draft else [],
        editable=current.stage is Stage.AWAITING_APPROVAL, stage=current.stage.value,
        form_subject=(form or {}).get("subject", draft.subject if draft else ""),
        form_body=(form or {}).get("body", draft.body if draft else ""),
        audit=_audit_rows(await m.store.audit(campaign_id, lead_id)),
        lead_error=report[lead_id].error if lead_id in report else None,
        message=message, error=error)


def _step(form: dict[str, str]) -> int:
    try:
        step = int(form.get("step") or 1)
    except ValueError:
        raise PageRefusal(422, "step: not a number") from None
    if step < 1:
        raise PageRefusal(422, "step: must be 1 or more")
    return step


def _lead_url(campaign_id: str, lead_id: str, step: int, done: str) -> str:
    extra = f"step={step}&" if step != 1 else ""
    return (f"/review/campaigns/{quote(campaign_id, safe='')}/leads/{quote(lead_id, safe='')}"
            f"?{extra}done={done}")


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/edit")
async def edit(request: Request, campaign_id: str, lead_id: str) -> Response:
    viewer, form = await _checked_post(request)
    step = _step(form)
    base = form.get("base_version")
    try:
        base_version = int(base) if base else None
    except ValueError:
        raise PageRefusal(422, "base_version: not a number") from None
    m = _manager(request)
    try:
        await m.edit_draft(campaign_id, lead_id, step=step, subject=form.get("subject"),
                           body=form.get("body"), by=viewer.reviewer, base_version=base_version)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err)) from err
        return await _lead_response(request, viewer, campaign_id, lead_id, step, status=409,
                                    error=f"Not saved: {err}", form=form)
    return RedirectResponse(_lead_url(campaign_id, lead_id, step, "saved"), status_code=303)


async def _set_excluded(request: Request, campaign_id: str, lead_id: str, excluded: bool
                        ) -> Response:
    viewer, form = await _checked_post(request)
    step = _step(form)
    m = _manager(request)
    try:
        await m.set_excluded(campaign_id, lead_id, excluded=excluded, step=step,
                             by=viewer.reviewer)
    except BadInput as err:
        if isinstance(err, NotFound):
            raise PageRefusal(404, str(err)) from err
        what = "excluded" if excluded else "included"
        return await _lead_response(request, viewer, campaign_id, lead_id, step, status=409,
                                    error=f"Not {what}: {err}")
    return RedirectResponse(_lead_url(campaign_id, lead_id, step,
                                      "excluded" if excluded else "included"), status_code=303)


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/exclude")
async def exclude(request: Request, campaign_id: str, lead_id: str) -> Response:
    return await _set_excluded(request, campaign_id, lead_id, True)


@router.post("/campaigns/{campaign_id}/leads/{lead_id}/include")
async def include(request: Request, campaign_id: str, lead_id: str) -> Response:
    return await _set_excluded(request, campaign_id, lead_id, False)
