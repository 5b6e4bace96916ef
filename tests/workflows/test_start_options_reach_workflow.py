"""Every start option reaches the workflow (or the store row its activities read).

`CampaignOptions` is what `campaign start`, `campaign schedule create`, `POST /campaigns`,
`POST /schedules` and the campaign webhook build; `CampaignOptions.campaign_input` (and
`CampaignInput.delivery_input` after it) and `CampaignOptions.stored` are the one mapping onto
the workflow's inputs, whose names are in the recorded histories. An option added to the
model but not to that mapping changes nothing downstream, and fails here by name; one without
a flag on the commands fails `test_every_option_has_its_flag`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from campaign_core.leads import IntakeResult
from campaign_core.models import CampaignInput, Channel, DeliveryInput
from campaign_core.send_window import SendWindow
from campaign_core.settings import Settings
from starter.api import create_app
from starter.cli import app as cli_app
from starter.cli.app import flag_of
from starter.manager import CampaignManager, StartResult
from starter.start_options import CampaignOptions, EngineTuning, ScheduleOptions

#: Values for options whose type alone does not say what a valid, non-default one is.
SAMPLES: dict[str, Any] = {
    "brief": "Book a 20-minute call.",
    "kb": "/srv/kb/acme",
    "channel": Channel.SMTP,
    "approval_timeout": "2d",
    "timezone": "Europe/Berlin",
    "send_window": "08:00-12:00 Tue,Thu",
    "follow_ups": ["2d", "5d"],
    "senders": ["ana", "bo"],
}
#: What an option needs beside it to have an effect (a zone reads a window).
CONTEXT: dict[str, dict[str, Any]] = {"timezone": {"send_window": "09:00-17:00 Mon-Fri"}}
#: Where each option lands: the workflow inputs' fields (history names) and the store row's.
EXPECTED: dict[str, set[str]] = {
    "brief": {"store.brief"},
    "kb": {"store.kb_dir"},
    "channel": {"CampaignInput.channel", "DeliveryInput.channel", "store.channel"},
    "approval_timeout": {"CampaignInput.approval_timeout_seconds"},
    "timezone": {"CampaignInput.send_window", "DeliveryInput.send_window"},
    "send_window": {"CampaignInput.send_window", "DeliveryInput.send_window"},
    "domain_limit": {"CampaignInput.domain_limit_per_minute",
                     "DeliveryInput.domain_limit_per_minute"},
    "send_rate": {"CampaignInput.send_rate_per_second", "DeliveryInput.send_rate_per_second"},
    "follow_ups": {"CampaignInput.follow_up_seconds", "DeliveryInput.follow_up_seconds"},
    "stop_on_company_reply": {"CampaignInput.stop_on_company_reply",
                              "DeliveryInput.stop_on_company_reply"},
    "budget_usd": {"store.budget_usd"},
    # Applied where the leads are taken in (the start, add-leads, each schedule firing's
    # copy: `ScheduledCampaignInput.allow_overlap`), so no campaign workflow needs it:
    # test_allow_overlap_is_applied_at_intake checks where it does land.
    "allow_overlap": set(),
    # Resolved against the store at the start (the named ones checked, or every active
    # sender), then mapped with the rest: test_senders_reach_the_workflow_resolved.
    "senders": {"CampaignInput.senders", "DeliveryInput.senders"},
    # Applied at the start (each chosen sender's DNS check refuses it), so it reaches no
    # workflow: test_strict_senders_is_applied_at_the_start.
    "strict_senders": set(),
}


def sample(name: str, field: FieldInfo) -> Any:
    """A valid value of option `name` other than its default."""
    if name in SAMPLES:
        return SAMPLES[name]
    kinds = {t for t in typing.get_args(field.annotation) if t is not type(None)} or {
        field.annotation}
    default = field.get_default(call_default_factory=True)
    if bool in kinds:
        return not default
    if int in kinds:
        return (default or 0) + 3
    if float in kinds:
        return (default or 0) + 2.5
    if str in kinds:
        return "sample"
    raise AssertionError(f"option {name!r}: add a valid non-default value to SAMPLES")


def landed(options: CampaignOptions) -> dict[str, Any]:
    """Everything downstream of `options`, keyed `CampaignInput.f`, `DeliveryInput.f`, `store.f`."""
    inp = options.campaign_input(campaign_id="c-1", name="Q4", queue_prefix="p-",
                                 use_search_attributes=False)
    out = {f"CampaignInput.{k}": v for k, v in inp.model_dump(mode="json").items()}
    out |= {f"DeliveryInput.{k}": v
            for k, v in inp.delivery_input().model_dump(mode="json").items()}
    return out | {f"store.{k}": v for k, v in options.stored().items()}


def reached(name: str) -> set[str]:
    """What setting option `name` (alone, in its context) changes downstream."""
    field = CampaignOptions.model_fields[name]
    base = CampaignOptions(**CONTEXT.get(name, {}))
    changed = CampaignOptions(**CONTEXT.get(name, {}), **{name: sample(name, field)})
    before, after = landed(base), landed(changed)
    return {key for key in after if after[key] != before[key]}


@pytest.mark.parametrize("name", list(CampaignOptions.model_fields))
def test_every_option_reaches_the_workflow_or_the_store(name: str) -> None:
    where = reached(name)
    assert where or EXPECTED.get(name) == set(), (
        f"option {name!r} reaches neither the workflow's input nor the store: map it in "
        "CampaignOptions.campaign_input (and CampaignInput.delivery_input if delivery needs "
        "it) or CampaignOptions.stored (or, for an option applied at intake only, say so in "
        "EXPECTED with an empty set and test where it lands)")
    if name in EXPECTED:
        assert where == EXPECTED[name]


def test_allow_overlap_is_applied_at_intake() -> None:
    """`allow_overlap` reaches no campaign workflow: the control plane applies it to the
    leads it stores; a schedule keeps it in its firings' input, for the copy of the leads."""
    assert "allow_overlap" not in CampaignInput.model_fields
    assert "allow_overlap" not in DeliveryInput.model_fields
    assert "allow_overlap" in CampaignOptions().digest_values()  # a retry must repeat it
    assert ScheduleOptions(cron="@daily", allow_overlap=True).campaign_options().allow_overlap


#: The options a start's idempotency digests held before issue 28: a start leaving the
#: senders options at their defaults digests exactly these, with the same values.
DIGESTED_BEFORE_SENDERS = {"brief", "kb", "channel", "approval_timeout", "send_window",
                           "domain_limit", "send_rate", "follow_ups", "stop_on_company_reply",
                           "budget_usd", "allow_overlap"}


def test_senders_reach_the_workflow_resolved() -> None:
    """`senders` is mapped as the control plane resolved it (starter.senders.resolve, tested
    in tests/senders/test_start_senders.py); `--senders a,b`, the flag repeated and a JSON
    list are the same names, once each; the webhook channel has none."""
    assert CampaignOptions(senders="ana, bo").senders == ["ana", "bo"]
    assert CampaignOptions(senders=["ana,bo", "ana", "cy"]).senders == ["ana", "bo", "cy"]
    inp = CampaignOptions(senders=["ana", "bo"]).campaign_input(campaign_id="c", name="n")
    assert inp.senders == ["ana", "bo"] == inp.delivery_input().senders
    hooked = CampaignOptions(channel=Channel.WEBHOOK, senders=["ana"])
    assert hooked.campaign_input(campaign_id="c", name="n").senders is None
    for bad in ("Ana", "ana,,bo", "", ["a b"]):
        with pytest.raises(ValueError, match="sender"):
            CampaignOptions(senders=bad)


def test_strict_senders_is_applied_at_the_start() -> None:
    """`strict_senders` decides whether a failing DNS check refuses the start (the
    manager's preflight); no workflow reads it. A retry must repeat it once it is set."""
    assert "strict_senders" not in CampaignInput.model_fields
    assert "strict_senders" not in DeliveryInput.model_fields
    assert "strict_senders" in CampaignOptions(strict_senders=True).digest_values()


def test_the_digests_of_a_start_without_senders_are_unchanged() -> None:
    """Both options at their defaults leave no key in the digests (so a campaign started
    before senders existed is retried as before); set, each is one, names in any order."""
    intake = IntakeResult(leads=[], rejected=[])
    plain = CampaignOptions(brief="Hi.", follow_ups=["2d"])
    assert set(plain.digest_values()) == DIGESTED_BEFORE_SENDERS
    assert set(plain.digests(intake, name="Q4")) == DIGESTED_BEFORE_SENDERS | {"name", "leads"}
    named = plain.model_copy(update={"senders": ["bo", "ana"], "strict_senders": True})
    assert set(named.digest_values()) == DIGESTED_BEFORE_SENDERS | {"senders",
                                                                   "strict_senders"}
    assert (CampaignOptions(senders=["bo", "ana"]).digests(intake, name="x")["senders"]
            == CampaignOptions(senders="ana,bo").digests(intake, name="x")["senders"])
    assert plain.digests(intake, name="Q4") == {
        key: value for key, value in named.digests(intake, name="Q4").items()
        if key not in ("senders", "strict_senders")}


def test_the_delivery_input_carries_every_setting_it_shares_with_the_campaigns() -> None:
    """`CampaignInput.delivery_input` passes on each field both inputs have (by name)."""
    shared = set(CampaignInput.model_fields) & set(DeliveryInput.model_fields) - {"carry"}
    values: dict[str, Any] = {
        "channel": Channel.WEBHOOK, "queue_prefix": "q-", "page_size": 7,
        "send_window": SendWindow.parse("10:00-11:00 Wed", "Asia/Tokyo"), "sends_per_run": 9,
        "domain_limit_per_minute": 4, "send_rate_per_second": 0.5, "bounce_threshold": 0.2,
        "bounce_min_sends": 5, "follow_up_seconds": [60, 120], "stop_on_company_reply": True,
        "senders": ["ana", "bo"]}
    assert shared - {"campaign_id"} == set(values), "give the new shared field a value here"
    inp = CampaignInput(campaign_id="c-2", name="x", **values)
    delivery = inp.delivery_input(paused=True)
    assert delivery.paused
    for name in shared:
        assert getattr(delivery, name) == getattr(inp, name), name


def test_a_schedule_starts_its_campaigns_with_the_same_mapping() -> None:
    values = {name: sample(name, field) for name, field in CampaignOptions.model_fields.items()}
    schedule = ScheduleOptions(cron="0 9 * * MON", paused=True, total_budget_usd=9.0, **values)
    assert schedule.campaign_options() == CampaignOptions(**values)


def test_engine_tuning_is_not_an_option() -> None:
    """Tests and benchmarks page differently; no door can, and the defaults are the engine's."""
    assert not set(CampaignOptions.model_fields) & set(EngineTuning.__dataclass_fields__)
    inp = CampaignOptions().campaign_input(campaign_id="c", name="n")
    default = CampaignInput(campaign_id="c", name="n")
    assert inp == default
    off = CampaignOptions().campaign_input(campaign_id="c", name="n",
                                           tuning=EngineTuning(per_domain_pacing=False))
    assert off.domain_limit_per_minute is None


def command_flags(*path: str) -> set[str]:
    command: Any = typer.main.get_command(cli_app)
    for name in path:
        command = command.commands[name]
    return {opt for param in command.params for opt in param.opts}


@pytest.mark.parametrize(("model", "path"), [(CampaignOptions, ("start",)),
                                             (ScheduleOptions, ("schedule", "create"))])
def test_every_option_has_its_flag(model: type[CampaignOptions], path: tuple[str, ...]) -> None:
    missing = {name for name in model.model_fields if flag_of(name) not in command_flags(*path)}
    assert not missing, f"`campaign {' '.join(path)}` has no flag for {sorted(missing)}"


# -- through the doors ----------------------------------------------------------------------------


def flags(values: dict[str, Any]) -> list[str]:
    """`values` as `campaign start` flags."""
    args: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            args += [flag_of(name)] if value else []
        elif isinstance(value, list):
            for item in value:
                args += [flag_of(name), str(item)]
        else:
            args += [flag_of(name), str(value.value if isinstance(value, Channel) else value)]
    return args


def test_the_cli_and_the_api_start_with_the_same_workflow_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every option, given as `campaign start` flags and as `POST /campaigns` keys, reaches
    `CampaignManager.start` as one CampaignOptions, and so the same workflow input."""
    (tmp_path / "kb" / "acme").mkdir(parents=True)
    monkeypatch.setenv("CAMPAIGN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAMPAIGN_KB_ROOT", str(tmp_path / "kb"))
    monkeypatch.setenv("CAMPAIGN_API_TOKEN", "t" * 32)
    monkeypatch.setenv("CAMPAIGN_SMTP_URL", "smtp://localhost:2525")
    monkeypatch.setenv("CAMPAIGN_POSTAL_ADDRESS", "1 Main St, Springfield")
    seen: list[CampaignOptions] = []

    async def start(self: CampaignManager, intake: IntakeResult,
                    options: CampaignOptions | None = None, **_: Any) -> StartResult:
        assert options is not None
        seen.append(options)
        return StartResult("c", "campaign:c", "http://ui", len(intake.leads))

    monkeypatch.setattr(CampaignManager, "start", start)
    values = {name: sample(name, field) for name, field in CampaignOptions.model_fields.items()}
    leads = tmp_path / "leads.csv"
    leads.write_text("email\nana@example.com\n")
    on_cli = {**values, "kb": str(tmp_path / "kb" / "acme")}
    result = CliRunner().invoke(cli_app, ["start", "--leads", str(leads), "--json",
                                          *flags(on_cli)])
    assert result.exit_code == 0, result.stderr
    body = {**{k: v.value if isinstance(v, Channel) else v for k, v in values.items()},
            "kb": "acme", "name": "Q4", "leads": [{"email": "ana@example.com"}]}
    with TestClient(create_app(Settings())) as client:
        r = client.post("/campaigns", json=body, headers={"Authorization": f"Bearer {'t' * 32}"})
    assert r.status_code == 201, r.text
    by_cli, by_api = seen
    assert by_api == by_cli.model_copy(update={"kb": str((tmp_path / "kb" / "acme").resolve())})
    assert landed(by_api) == landed(by_cli)
    assert by_cli == CampaignOptions(**on_cli)
