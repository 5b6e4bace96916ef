"""Settings from the environment and `.env`, with the names the contract promises.

One pydantic-settings model so every process (CLI, API, worker) reads configuration
the same way; secrets are `SecretStr` so they never show up in a repr or a log line.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_UI_URL = "http://localhost:8233"


class Settings(BaseSettings):
    """Everything configurable, each field under its contract name."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True,
        # `VAR=` (as in .env.example, or `${VAR:-}` in compose) means unset, not "".
        env_ignore_empty=True,
    )

    temporal_address: str | None = Field(
        default=None, alias="TEMPORAL_ADDRESS",
        description="The Temporal frontend (host:port). Unset: the address a running "
        "`campaign dev` recorded in dev.json, else localhost:7233.",
    )
    temporal_namespace: str = Field(
        default="default", alias="TEMPORAL_NAMESPACE", description="The Temporal namespace.",
    )
    temporal_ui_url: str | None = Field(
        default=None, alias="TEMPORAL_UI_URL",
        description="Base of the Web UI links that commands print. Unset: the UI a running "
        "`campaign dev` recorded in dev.json, else http://localhost:8233.",
    )
    campaign_home: Path = Field(
        default=Path(".campaign"), alias="CAMPAIGN_HOME",
        description="The embedded state: temporal.db, campaign.db, outbox/, dev.json "
        "(docs/operations.md, State on disk).",
    )
    # URLs that may carry a password are secrets too: never in a repr or a log line.
    store_url: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_STORE_URL",
        description="sqlite:///PATH or postgresql://... (Postgres, or a Supabase project's "
        "database). Unset: sqlite:///$CAMPAIGN_HOME/campaign.db (or Supabase's REST API "
        "when SUPABASE_URL and SUPABASE_KEY are set).",
    )
    supabase_url: str | None = Field(
        default=None, alias="SUPABASE_URL",
        description="With SUPABASE_KEY and no CAMPAIGN_STORE_URL, the store talks to this "
        "Supabase project's REST API.",
    )
    supabase_key: SecretStr | None = Field(
        default=None, alias="SUPABASE_KEY",
        description="The Supabase project's service key (the anon key sees nothing: row-level "
        "security is on for every table).",
    )
    llm_provider: str | None = Field(
        default=None, alias="CAMPAIGN_LLM_PROVIDER",
        description="`openai` or `offline` (the deterministic template writer, labelled "
        "`offline-template` in provenance). Unset: `openai` if OPENAI_API_KEY is set, else "
        "`offline`.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, alias="OPENAI_API_KEY",
        description="Key of the OpenAI-compatible endpoint the copywriter calls.",
    )
    openai_base_url: str | None = Field(
        default=None, alias="OPENAI_BASE_URL",
        description="Any OpenAI-compatible endpoint; unset: OpenAI's.",
    )
    llm_model: str = Field(
        default="gpt-4o-mini", alias="CAMPAIGN_LLM_MODEL", description="The drafting model.",
    )
    llm_rate_limit: float = Field(
        default=5.0, gt=0, alias="CAMPAIGN_LLM_RATE_LIMIT",
        description="LLM calls per second across all workers (the llm task queue's limit, "
        "enforced by the Temporal server).",
    )
    llm_timeout_seconds: float = Field(
        default=60.0, gt=0, alias="CAMPAIGN_LLM_TIMEOUT",
        description="Per-request timeout of one LLM or embeddings call, in seconds; a timeout "
        "is retried.",
    )
    llm_max_output_tokens: int = Field(
        default=800, gt=0, alias="CAMPAIGN_LLM_MAX_TOKENS",
        description="Output cap of one LLM call, and the output part of a call's worst case "
        "that --budget-usd reserves.",
    )
    llm_price_input: float | None = Field(
        default=None, ge=0, alias="CAMPAIGN_LLM_PRICE_INPUT",
        description="USD per million prompt tokens; overrides the built-in price table.",
    )
    llm_price_output: float | None = Field(
        default=None, ge=0, alias="CAMPAIGN_LLM_PRICE_OUTPUT",
        description="USD per million completion tokens; overrides the built-in price table.",
    )
    intent_min_confidence: float = Field(
        default=0.7, ge=0.0, le=1.0, alias="CAMPAIGN_INTENT_MIN_CONFIDENCE",
        description="A reply's intent read with less confidence than this (by the LLM or the "
        "offline rules) is treated as `unclear` and left for a person; an unsubscribe is "
        "honoured whatever its confidence (docs/replies.md).",
    )
    embedding_model: str | None = Field(
        default=None, alias="CAMPAIGN_EMBEDDING_MODEL",
        description="When set, retrieval adds dense search with this OpenAI-compatible "
        "embedding model, fused with BM25 by reciprocal rank.",
    )
    retrieval_top_k: int = Field(
        default=3, ge=1, le=20, alias="CAMPAIGN_RETRIEVAL_TOP_K",
        description="Passages retrieved per lead.",
    )
    kb_max_file_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, alias="CAMPAIGN_KB_MAX_FILE_BYTES",
        description="Largest knowledge-base file read; larger ones are skipped and logged.",
    )
    kb_root: Path | None = Field(
        default=None, alias="CAMPAIGN_KB_ROOT",
        description="The folder under which a knowledge base named over HTTP (POST "
        "/campaigns, the campaign webhook, POST /schedules) must lie; while unset, HTTP "
        "callers can name no knowledge base.",
    )
    smtp_url: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_SMTP_URL",
        description="The smtp channel's server: smtp://user:pass@host:port (STARTTLS when "
        "offered) or smtps:// (implicit TLS); docs/deliverability.md, SMTP.",
    )
    mail_from: str = Field(
        default="Campaigns <campaigns@localhost>", alias="CAMPAIGN_FROM",
        description="The sender of every message; its name signs the drafts, its domain "
        "names the mailto: unsubscribe address.",
    )
    sender_max_bounce_rate: float = Field(
        default=0.03, gt=0, le=1, alias="CAMPAIGN_SENDER_MAX_BOUNCE_RATE",
        description="A sender pauses itself when bounces over its last 100 sends pass this "
        "rate (with at least 3 bounces); docs/senders.md.",
    )
    dns_resolver: str | None = Field(
        default=None, alias="CAMPAIGN_DNS_RESOLVER",
        description="host:port of the DNS resolver that `campaign sender check` and the "
        "sender check of `campaign start` ask; unset: the system's resolvers.",
    )
    smtp_require_tls: bool | None = Field(
        default=None, alias="CAMPAIGN_SMTP_REQUIRE_TLS",
        description="Refuse to send over SMTP without TLS (smtps:// or STARTTLS); unset: on "
        "for every host but loopback.",
    )
    webhook_url: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_WEBHOOK_URL",
        description="Target of the webhook channel (a JSON POST signed as Standard Webhooks, "
        "with Idempotency-Key).",
    )
    imap_url: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_IMAP_URL",
        description="The reply mailbox: imaps://user:pass@host[:port]/INBOX (imap:// uses "
        "STARTTLS when offered; plain only to loopback). Polled by a Temporal Schedule.",
    )
    trusted_authserv_id: str | None = Field(
        default=None, alias="CAMPAIGN_TRUSTED_AUTHSERV_ID",
        description="The authserv-id of the mail server that receives replies for us: a "
        "reply matched by its sender's address alone is acted on only when this server's "
        "Authentication-Results says DMARC passed, or DKIM or SPF passed aligned with the "
        "From domain. Unset: every address-only match is recorded unverified and changes "
        "nothing until `campaign replies confirm`.",
    )
    imap_poll_seconds: int = Field(
        default=60, ge=10, alias="CAMPAIGN_IMAP_POLL_SECONDS",
        description="How often the reply mailbox is polled.",
    )
    postal_address: str | None = Field(
        default=None, alias="CAMPAIGN_POSTAL_ADDRESS",
        description="The sender's physical postal address, put in every message's footer "
        "(CAN-SPAM); required by the smtp and webhook channels.",
    )
    encryption_key: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_ENCRYPTION_KEY",
        description="When set, every payload in Temporal history is AES-256-GCM encrypted: "
        "comma-separated KEY_ID:BASE64 entries of 32-byte keys; the first encrypts, all "
        "decrypt (docs/operations.md, Encryption and tracing).",
    )
    require_encryption: bool = Field(
        default=False, alias="CAMPAIGN_REQUIRE_ENCRYPTION",
        description="Refuse to start without CAMPAIGN_ENCRYPTION_KEY and refuse payloads that "
        "are not encrypted (drain runs started in clear first).",
    )
    api_token: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_API_TOKEN",
        description="Bearer token of the HTTP API's service routes; `campaign api` refuses "
        "to start without it unless --insecure-dev.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_WEBHOOK_SECRET",
        description="whsec_<base64>: verifies the Standard Webhooks signature of calls to "
        "/webhooks/*.",
    )
    delivery_webhook_secret: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_DELIVERY_WEBHOOK_SECRET",
        description="whsec_<base64>: signs the webhook channel's posts (Standard Webhooks); "
        "required by that channel.",
    )
    api_max_body: int = Field(
        default=10_000_000, gt=0, alias="CAMPAIGN_API_MAX_BODY",
        description="Largest request body the API reads, in bytes (10 MB); larger is 413, "
        "decided before the body is parsed.",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1", alias="CAMPAIGN_TRUSTED_PROXIES",
        validation_alias=AliasChoices("CAMPAIGN_TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS"),
        description="Comma-separated addresses or networks of the reverse proxies whose "
        "X-Forwarded-Proto and X-Forwarded-For `campaign api` and `campaign dev` believe "
        "(uvicorn's forwarded_allow_ips; `*` trusts any peer). Through a TLS proxy not "
        "listed here, requests look like plain http and the review session cookie goes out "
        "without Secure (see cookie_secure).",
    )
    cookie_secure: Literal["auto", "always"] = Field(
        default="auto", alias="CAMPAIGN_COOKIE_SECURE",
        description="`auto`: the review pages' cookies are Secure when the request came over "
        "https (directly, or through a trusted proxy); `always`: Secure whatever the request "
        "looked like, for a deployment served only over https.",
    )
    public_url: str = Field(
        default="http://localhost:8000", alias="CAMPAIGN_PUBLIC_URL",
        description="Base of unsubscribe links; set it wherever workers run apart from the API "
        "that recipients reach. Unset: the API `campaign dev` serves (its workers, and "
        "`campaign worker`s with the same CAMPAIGN_HOME, read it from dev.json), in "
        "`campaign api` its own --host/--port, else this default.")
    unsubscribe_secret: SecretStr | None = Field(
        default=None, alias="CAMPAIGN_UNSUBSCRIBE_SECRET",
        description="Key that signs unsubscribe links; when unset, one is generated once and "
        "kept in the store, so every worker and API process shares it.",
    )
    otlp_endpoint: str | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="When set, traces go there over OTLP/HTTP (<endpoint>/v1/traces), and "
        "metrics too (<endpoint>/v1/metrics) from a process with no --metrics-port.",
    )
    task_queue_prefix: str = Field(
        default="",
        alias="CAMPAIGN_TASK_QUEUE_PREFIX",
        validation_alias=AliasChoices("CAMPAIGN_TASK_QUEUE_PREFIX"),
        description="Prefix for every task queue, so several deployments can share a namespace.",
    )

    send_rate_limit: float = Field(
        default=10.0, gt=0, alias="CAMPAIGN_SEND_RATE_LIMIT",
        description="Messages sent per second, across all workers (the delivery queue's limit).",
    )
    schedule_min_interval: str = Field(
        default="1h", pattern=r"^\s*\d+\s*[smhdwSMHDW]?\s*$",
        alias="CAMPAIGN_SCHEDULE_MIN_INTERVAL",
        description="The shortest gap a recurring campaign's schedule may leave between two "
        "firings (cron or @every), e.g. 1h, 30m, 3600 (seconds); 0 sets no minimum. Each "
        "firing starts a new campaign with a budget of its own.",
    )

    reply_cooldown: str = Field(
        default="90d", pattern=r"^\s*\d+\s*[smhdwSMHDW]?\s*$", alias="CAMPAIGN_REPLY_COOLDOWN",
        description="How long after a person's reply (not an automatic one) a new campaign, "
        "`add-leads` or a schedule's firing skips them, e.g. 90d, 12w, 48h; 0 skips nobody for "
        "a reply. People in another campaign's sequence still going on are skipped too; "
        "`--allow-overlap` keeps both.",
    )
    ooo_default_delay: str = Field(
        default="7d", pattern=r"^\s*\d+\s*[smhdwSMHDW]?\s*$", alias="CAMPAIGN_OOO_DEFAULT_DELAY",
        description="How far an out-of-office reply that gives no return date moves the "
        "lead's next step, e.g. 7d, 1w, 48h (with a date: to the day after it). The sequence "
        "does not stop.",
    )

    deployment_version: str | None = Field(
        default=None, alias="CAMPAIGN_DEPLOYMENT_VERSION",
        description="Worker Versioning: the build id (or deployment:build id) every worker "
        "serves; unset, workers are unversioned. docs/operations.md: Deploying a new version.",
    )
    deployment_name: str = Field(
        default="campaign-engine", alias="CAMPAIGN_DEPLOYMENT_NAME",
        description="The Worker Deployment the versions belong to.",
    )

    @cached_property
    def dev_file(self) -> Path:
        """Where a running `campaign dev` records its addresses."""
        return self.campaign_home / "dev.json"

    @property
    def outbox_dir(self) -> Path:
        return self.campaign_home / "outbox"

    @property
    def resolved_store_url(self) -> str:
        """The store to use: explicit URL, else the embedded SQLite file."""
        if self.store_url and self.store_url.get_secret_value():
            return self.store_url.get_secret_value()
        return f"sqlite:///{(self.campaign_home / 'campaign.db').resolve()}"

    def _dev_info(self) -> dict[str, str]:
        try:
            data = json.loads(self.dev_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @property
    def resolved_temporal_address(self) -> str:
        """`TEMPORAL_ADDRESS`, else the frontend a running `campaign dev` recorded."""
        if self.temporal_address:
            return self.temporal_address
        return self._dev_info().get("address", "localhost:7233")

    @property
    def resolved_ui_url(self) -> str:
        """`TEMPORAL_UI_URL`, else the UI a running `campaign dev` recorded."""
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        return self._dev_info().get("ui_url", DEFAULT_UI_URL).rstrip("/")

    @property
    def resolved_public_url(self) -> str:
        """Where unsubscribe links point: CAMPAIGN_PUBLIC_URL when set; else the API of a
        running `campaign dev` (dev.json, so its own workers and a `campaign worker` beside
        it link to the port it was given, not to :8000); else the default.

        Read at each use, like the Temporal address, since dev.json comes and goes.
        """
        if "public_url" in self.model_fields_set:
            return self.public_url.rstrip("/")
        return self._dev_info().get("api_url", self.public_url).rstrip("/")

    def serve_links_from(self, base: str) -> None:
        """Links made by this process point at `base`, the API it serves, unless
        CAMPAIGN_PUBLIC_URL is set (`campaign api --host --port`)."""
        if "public_url" not in self.model_fields_set:
            self.public_url = base

    @property
    def reply_cooldown_delta(self) -> timedelta:
        """CAMPAIGN_REPLY_COOLDOWN as a timedelta (`90d`, `12w`, `48h`, `3600` seconds)."""
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", self.reply_cooldown.lower())
        if match is None:  # the field's pattern refused it already
            raise ValueError(f"CAMPAIGN_REPLY_COOLDOWN: {self.reply_cooldown!r} is not a duration")
        units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
        return timedelta(seconds=int(match.group(1)) * units[match.group(2)])

    @property
    def ooo_default_delay_delta(self) -> timedelta:
        """CAMPAIGN_OOO_DEFAULT_DELAY as a timedelta (`7d`, `1w`, `48h`, `3600` seconds)."""
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", self.ooo_default_delay.lower())
        if match is None:  # the field's pattern refused it already
            raise ValueError(f"CAMPAIGN_OOO_DEFAULT_DELAY: {self.ooo_default_delay!r} is not a "
                             "duration")
        units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
        return timedelta(seconds=int(match.group(1)) * units[match.group(2)])

    @property
    def resolved_llm_provider(self) -> str:
        if self.llm_provider:
            return self.llm_provider
        return "openai" if self.openai_api_key else "offline"


def load_settings() -> Settings:
    """Read settings now (not at import), so tests and subcommands see the current env."""
    return Settings()
