"""A campaign on the SMTP channel with the worker SIGKILLed twice during delivery.

The done-criterion of exactly-once delivery, measured end to end: a real dev server, a
real SMTP server (aiosmtpd on loopback, recording every message it accepts), the real
agents (offline copywriter) in a separate worker process, the SQLite store. Some leads
are suppressed and some are left unapproved; during delivery the worker process is
killed with SIGKILL twice (after `--kill-at` messages) and started again each time.

    .venv/bin/python -m bench.bench_smtp_kill --leads 1000 [--kill-at 150,500] [--tls]

It prints the figures and exits 1 unless the messages received equal the leads approved
and not suppressed, each received once (no duplicate Message-ID, none to a suppressed
or unapproved lead). `--tls` runs the SMTP session over STARTTLS with a throwaway CA
(trusted by the worker through SSL_CERT_FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO, Any

from pydantic import SecretStr

from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Channel, Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.devstack import in_memory_dev_server
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.fakes.smtp_server import SmtpSink, smtp_server

REPO = Path(__file__).resolve().parent.parent
KB = REPO / "starter" / "demo_data" / "kb"
PREFIX = "smtpkill-"
POSTAL_ADDRESS = "Bench Inc., 1 Main St, Springfield, IL 62701, USA"
#: Nothing from the caller's environment that would point the worker elsewhere.
SCRUB = ("TEMPORAL_", "CAMPAIGN_", "OPENAI_", "SUPABASE_", "SSL_CERT_")


class WorkerProcess:
    """`python -m starter worker` in its own process group, restartable, killable."""

    def __init__(self, env: dict[str, str], cwd: Path, log: IO[bytes]) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log.write(f"\n--- worker start #{self.starts} at {time.time():.3f}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "starter", "worker"], env=self.env, cwd=self.cwd,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker's process group (it is its own, started by us) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited by itself (code {self.proc.returncode}); "
                               "see its log")


def worker_env(address: str, home: Path, smtp_url: str, ca_file: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    env.update({
        "TEMPORAL_ADDRESS": address, "CAMPAIGN_HOME": str(home), "CAMPAIGN_SMTP_URL": smtp_url,
        "CAMPAIGN_TASK_QUEUE_PREFIX": PREFIX, "CAMPAIGN_LLM_PROVIDER": "offline",
        "CAMPAIGN_POSTAL_ADDRESS": POSTAL_ADDRESS,
        "CAMPAIGN_LLM_RATE_LIMIT": "1000", "CAMPAIGN_SEND_RATE_LIMIT": "1000",
        "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
    })
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
    return env


async def wait_stage(mgr: CampaignManager, cid: str, stages: set[Stage], worker: WorkerProcess,
                     limit_s: float) -> CampaignStatus:
    deadline = time.monotonic() + limit_s
    while True:
        worker.check_alive()
        st = await mgr.status(cid)
        if st.stage in stages:
            return st
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {st.stage.value} after {limit_s:.0f} s: {st.counts}")
        await asyncio.sleep(1)


async def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> int:
    n, kill_at = args.leads, sorted(args.kill_at)
    home = tmp / "home"
    home.mkdir()
    ca_file: Path | None = None
    server_tls: dict[str, Any] = {}
    if args.tls:
        import trustme

        ca = trustme.CA()
        ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        server_tls = {"tls": "starttls", "tls_context": ctx}
    sink: SmtpSink
    sink, smtp_url = stack.enter_context(smtp_server(**server_tls))

    env = await in_memory_dev_server()
    worker: WorkerProcess | None = None
    try:
        address = env.client.service_client.config.target_host
        log_path = tmp / "worker.log"
        log = stack.enter_context(log_path.open("ab"))
        worker = WorkerProcess(worker_env(address, home, smtp_url, ca_file), tmp, log)
        settings = Settings(CAMPAIGN_HOME=home, CAMPAIGN_SMTP_URL=SecretStr(smtp_url),
                            CAMPAIGN_TASK_QUEUE_PREFIX=PREFIX, TEMPORAL_ADDRESS=address,
                            CAMPAIGN_LLM_PROVIDER="offline", CAMPAIGN_POSTAL_ADDRESS=POSTAL_ADDRESS)
        store = SqliteStore(home / "campaign.db")
        await store.migrate()
        mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=PREFIX)

        cid = f"smtpkill-{n}"
        domains = max(1, n // 4)  # 4 leads a domain: far under the 20/min domain limit
        rows = [{"email": f"lead{i}@d{i % domains}.example.com", "first_name": f"Lead{i}",
                 "company": f"Co {i % domains}"} for i in range(n)]
        intake = parse_lead_rows(enumerate(rows, start=2), cid)
        leads = intake.leads
        assert len(leads) == n, intake.rejected
        by_id = {lead.lead_id: lead for lead in leads}
        unapproved = [lead.lead_id for lead in leads[-args.unapproved:]] if args.unapproved else []
        approved = [lead.lead_id for lead in leads if lead.lead_id not in set(unapproved)]
        suppressed = {by_id[i].email for i in approved[:: max(1, len(approved) // args.suppress)]
                      [: args.suppress]}
        expected = {message_key(cid, i) for i in approved if by_id[i].email not in suppressed}

        worker.start()
        t0 = time.monotonic()
        await mgr.start(intake,
                        CampaignOptions(brief="Book a call about the new dashboard.", kb=str(KB),
                                        channel=Channel.SMTP),
                        name=cid, campaign_id=cid)
        drafted = await wait_stage(mgr, cid, {Stage.AWAITING_APPROVAL, Stage.FAILED}, worker,
                                   args.timeout)
        t1 = time.monotonic()
        if drafted.stage is not Stage.AWAITING_APPROVAL:
            print(f"drafting ended {drafted.stage.value}: {drafted.error}", file=sys.stderr)
            return 1
        await store.add_suppressions(sorted(suppressed), "bench", source="manual")
        n_approved = await mgr.approve(cid, lead_ids=approved if unapproved else None,
                                       by="bench")
        t2 = time.monotonic()
        kills: list[tuple[float, int]] = []  # (seconds since approval, messages received)
        final: CampaignStatus | None = None
        deadline = t2 + args.timeout
        last_poll = 0.0
        while True:
            if len(kills) < len(kill_at) and len(sink.messages) >= kill_at[len(kills)]:
                worker.kill()
                kills.append((time.monotonic() - t2, len(sink.messages)))
                print(f"  SIGKILL #{len(kills)} at +{kills[-1][0]:.1f} s, "
                      f"{kills[-1][1]} received", flush=True)
                worker.start()
            worker.check_alive()
            if time.monotonic() - last_poll > 2:
                last_poll = time.monotonic()
                st = await mgr.status(cid)
                if st.stage in {Stage.COMPLETED, Stage.FAILED, Stage.CANCELLED}:
                    final = st
                    break
                if time.monotonic() > deadline:
                    print(f"timed out delivering: {st.stage.value} {st.counts}", file=sys.stderr)
                    break
            await asyncio.sleep(0.02)
        t3 = time.monotonic()
        await asyncio.sleep(1)  # a last message still in flight would show as a duplicate
        report = await mgr.report(cid)
    finally:
        if worker is not None:
            worker.kill()  # before the server goes, so it does not log a storm of errors
        await env.shutdown()

    received = list(sink.messages)
    ids = [str(m.message["Message-ID"]) for m in received]
    keys = [str(m.message["X-Campaign-Message-Key"]) for m in received]
    per_id = collections.Counter(ids)
    dups = {i: c for i, c in per_id.items() if c > 1}
    got = set(keys)
    statuses = collections.Counter(r.delivery_status for r in report)
    unconfirmed = [r for r in report if (r.error or "").startswith("unconfirmed")]
    missing = expected - got
    unexpected = got - expected
    rcpt_ok = all(m.rcpt_tos == [str(m.message["To"].addresses[0].addr_spec)] for m in received)
    ok = (final is not None and final.stage is Stage.COMPLETED and len(received) == len(expected)
          and not dups and not missing and not unexpected and rcpt_ok)

    print(f"leads: {n} over {domains} domains, approved: {n_approved}, "
          f"suppressed (approved): {len(suppressed)}, expected messages: {len(expected)}")
    print(f"SMTP: {'STARTTLS ' + (received[0].tls or '?') if args.tls and received else 'plain'}")
    print(f"received: {len(received)}, distinct Message-IDs: {len(per_id)}, "
          f"duplicates: {len(received) - len(per_id)}, missing: {len(missing)}, "
          f"unexpected (suppressed/unapproved/unknown): {len(unexpected)}")
    print("report by delivery_status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    print(f"rows resolved as unconfirmed (worker died during DATA): {len(unconfirmed)}, "
          f"of which received: {sum(1 for r in unconfirmed if r.message_id in per_id)}")
    print("kills: " + ", ".join(f"#{i + 1} at +{s:.1f} s after approval ({c} received)"
                                for i, (s, c) in enumerate(kills)) + f"; worker starts: {worker.starts}")
    final_txt = f"{final.stage.value} {final.counts}" if final else "not finished"
    print(f"final: {final_txt}")
    print(f"wall: drafting {t1 - t0:.1f} s, delivery {t3 - t2:.1f} s, total {t3 - t0:.1f} s")
    if dups:
        print(f"DUPLICATES: {sorted(dups.items())[:10]}", file=sys.stderr)
    if missing:
        rows_by_id = {message_key(cid, r.lead_id): r for r in report}
        print(f"MISSING: {[(k, rows_by_id.get(k)) for k in sorted(missing)[:10]]}", file=sys.stderr)
    if unexpected:
        print(f"UNEXPECTED: {sorted(unexpected)[:10]}", file=sys.stderr)
    if len(kills) < len(kill_at):
        print(f"note: only {len(kills)} of {len(kill_at)} kills happened", file=sys.stderr)
    print("OK" if ok else f"FAILED (worker log and store kept in {tmp})")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--kill-at", type=lambda s: [int(x) for x in s.split(",")],
                        default=[150, 500], help="received-message counts to SIGKILL at")
    parser.add_argument("--suppress", type=int, default=10, help="approved leads to suppress")
    parser.add_argument("--unapproved", type=int, default=5, help="leads left unapproved")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per phase")
    parser.add_argument("--tls", action="store_true", help="SMTP over STARTTLS (test CA)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-smtp-kill-"))
    code = 1
    try:
        with ExitStack() as stack:
            code = asyncio.run(run(args, stack, tmp))
    finally:
        if code == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
