"""Benchmark: acknowledgement latency of signed slash commands and button clicks.

Measures, under C concurrent senders (default 50), how long Slack would wait for the HTTP 200
that acknowledges a request: p50, p99 and max, for rollbot's Slack front and for a bare Bolt
``AsyncApp`` that only acks, measured in the same run; three runs (``--runs``), and the median of
their p50, p99 and ratio. Target: rollbot's p99 within 1.5x the bare app's, per kind of request.

- The local Slack emulator runs in this process; both apps call its Web API (``auth.test``,
  and rollbot's answers through response URLs).
- Each app runs in a subprocess of its own (``--serve bare|rollbot``, which prints its port and
  serves until SIGTERM), so the senders here share no event loop with the app they measure.
- rollbot gets a throw-away runbook (one environment whose SSH host is unreachable: the measured
  commands never need SSH) and a throw-away embedded PostgreSQL.
- Requests: ``/rollback help`` (rollbot acks, then answers through the response URL),
  ``/rollback status`` (acks, then reads the database and answers), and clicks on the Cancel
  button of a card (rollbot acks, tries to cancel it in the database, finds it already
  cancelled and answers through the response URL). ``--card unknown`` clicks a card rollbot
  has never seen instead.
- Warm-up first, then rounds alternating the apps (bare, rollbot, then rollbot, bare...) so that
  drift of the machine hits both alike; after each phase the app is given time to finish what it
  does after its acks, so that work never overlaps the other app's measurement. This process's
  garbage collector is paused during phases, so that the measuring side adds no GC pauses.

Everything listens on 127.0.0.1; it stops by itself and cleans up (subprocesses by pid, the
PostgreSQL it started, its temp directory), even on error. Run from the repository root:

    .venv/bin/python bench/ack_latency.py [--requests 1000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # slack_emulator and tests are imported from the checkout
    sys.path.insert(0, str(ROOT))

import slack_bolt  # noqa: E402
from aiohttp import web  # noqa: E402
from slack_bolt.async_app import AsyncAck, AsyncApp  # noqa: E402
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

from bot.store.embedded_pg import EmbeddedPostgres  # noqa: E402
from handlers.ids import Action, Block  # noqa: E402
from handlers.server import EVENTS_PATH  # noqa: E402
from slack_emulator import Emulator, SendResult, SlackSender  # noqa: E402
from tests.slack_world import (  # noqa: E402
    ALICE,
    INCIDENTS,
    SECRET,
    SLACK_TABLE,
    TOKEN,
    populate,
)

APPS = ("bare", "rollbot")
KINDS = ("/rollback help", "/rollback status", "button click")
TARGET = 1.5  # rollbot p99 / bare p99
UNKNOWN_CARD = "0123456789abcdef"  # never proposed: rollbot does not know it
SEND_TIMEOUT_S = 10.0
CHILD_START_TIMEOUT_S = 60.0

RUNBOOK = """\
default_environment = "production"
[environments.production]
service = "api"
image = "azora-api"
health_url = "http://127.0.0.1:9/health"
version_url = "http://127.0.0.1:9/version"
[environments.production.ssh]
host = "127.0.0.1"
port = 9
user = "prod-user"
key_file = "{tmp}/id_ed25519"
known_hosts = "{tmp}/known_hosts"
[environments.production.compose]
file = "/srv/azora/docker-compose.yml"
command = "docker-compose"
"""


# --- the apps under test (subprocesses) -----------------------------------------------------


async def _serve_until_stopped(start: Callable[[], Awaitable[int]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def orphaned() -> None:  # the driver holds our stdin open: EOF means it is gone
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=orphaned, daemon=True).start()
    port = await start()
    print(f"PORT={port}", flush=True)
    await stop.wait()


async def serve_bare(api_url: str) -> None:
    """A Bolt app that only acks: the floor any Bolt app on this machine stands on."""
    app = AsyncApp(signing_secret=SECRET, client=AsyncWebClient(base_url=api_url, token=TOKEN))

    @app.command("/rollback")
    async def command(ack: AsyncAck) -> None:
        await ack()

    @app.action(re.compile(".*"))
    async def action(ack: AsyncAck) -> None:
        await ack()

    runner = web.AppRunner(app.web_app(path=EVENTS_PATH), access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    try:
        await _serve_until_stopped(start)
    finally:
        await runner.cleanup()


async def serve_rollbot(api_url: str, dsn: str, runbook: Path) -> None:
    """rollbot's Slack front exactly as ``rollbot serve`` composes it."""
    from bot.config import Settings, load_runbook
    from handlers.server import running

    settings = Settings(database_url=dsn, rollbot_config=runbook,
                        rollbot_data_dir=runbook.parent / "rollbot-data",
                        slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                        slack_app_token=None, slack_api_url=api_url, port=0)
    async with running(settings, load_runbook(runbook)) as service:
        async def start() -> int:
            return service.port

        await _serve_until_stopped(start)


# --- the driver -------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far (Linux /proc), or NaN."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")


@dataclass
class Samples:
    elapsed_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    round_p99_s: list[float] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1


def spawn(name: str, args: list[str], tmp: Path) -> Child:
    log = tmp / f"{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", name, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    return Child(name, proc, "", log)


async def wait_port(child: Child) -> None:
    assert child.proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline),
                                      CHILD_START_TIMEOUT_S)
    except TimeoutError:
        line = b""
    text = line.decode(errors="replace").strip()
    if not text.startswith("PORT="):
        tail = child.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {child.name} app did not start (got {text!r}); its log:\n{tail}")
    child.url = f"http://127.0.0.1:{int(text[5:])}{EVENTS_PATH}"


def stop_child(child: Child) -> None:
    if child.proc.stdin is not None:
        child.proc.stdin.close()
    if child.proc.poll() is None:
        child.proc.terminate()
        try:
            child.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(timeout=10)
    if child.proc.stdout is not None:
        child.proc.stdout.close()


async def quiesce(emu: Emulator, *, settle_s: float = 0.3, limit_s: float = 20.0) -> None:
    """Wait until the apps stop calling Slack: rollbot's work after its acks is done."""
    deadline = time.monotonic() + limit_s
    seen, since = len(emu.calls), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if len(emu.calls) != seen:
            seen, since = len(emu.calls), time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return


async def run_phase(child: Child, emu: Emulator, send: Callable[[SlackSender, int], Awaitable[
        SendResult]], *, count: int, concurrency: int, deadline: float,
        into: Samples | None) -> None:
    """``count`` requests with at most ``concurrency`` in flight; into ``into`` unless warm-up."""
    sender = SlackSender(child.url, SECRET, emu)
    next_index = iter(range(count))
    cpu0, first = child.cpu_s(), len(into.elapsed_s) if into is not None else 0

    gc.disable()  # no GC pause of the measuring side inside a phase

    async def worker() -> None:
        for i in next_index:
            if time.monotonic() > deadline:
                return
            try:
                result = await send(sender, i)
            except Exception as exc:
                if into is not None:
                    into.fail(type(exc).__name__)
                continue
            if into is None:
                continue
            if result.status == 200:
                into.elapsed_s.append(result.elapsed)
            else:
                into.fail(f"HTTP {result.status}")

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        gc.enable()
    await quiesce(emu)
    gc.collect()
    if into is not None:
        into.cpu_s += child.cpu_s() - cpu0
        if len(into.elapsed_s) > first:
            into.round_p99_s.append(percentile(into.elapsed_s[first:], 99))


def percentile(data: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(data)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _ratio(bare: Samples, rollbot: Samples) -> float | None:
    if not bare.elapsed_s or not rollbot.elapsed_s:
        return None
    return percentile(rollbot.elapsed_s, 99) / percentile(bare.elapsed_s, 99)


def _ms(samples: Samples, p: float) -> float | None:
    return percentile(samples.elapsed_s, p) * 1000.0 if samples.elapsed_s else None


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return statistics.median(known) if known else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


Results = dict[tuple[str, str], Samples]


def report(runs: list[Results], args: argparse.Namespace, rounds: int,
           load: tuple[float, float, float], partial: bool) -> str:
    card = ("Cancel on a card rollbot does not know" if args.card == "unknown"
            else "Cancel on a card already cancelled")
    lines = [
        f"### Acknowledgement latency, {args.concurrency} concurrent senders",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, slack_bolt {slack_bolt.version.__version__}; "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        f"{len(runs)} runs of {args.requests} requests per kind per app, each in {rounds} "
        f"rounds alternating the apps, after a warm-up of {args.warmup}; each app in its own "
        "process, the senders and the Slack emulator in a third; every request signed, over "
        "HTTP on 127.0.0.1; time from send to the HTTP 200 (the ack). Button clicks: "
        f"{card}.",
        "",
        "| run | request | bare p50 / p99 (ms) | rollbot p50 / p99 (ms) | ratio (p99) |"
        " not acked |",
        "|--:|---|--:|--:|--:|--:|",
    ]
    for n, results in enumerate(runs, 1):
        for kind in KINDS:
            bare, rb = results[("bare", kind)], results[("rollbot", kind)]
            failed = sum(bare.failures.values()) + sum(rb.failures.values())
            lines.append(
                f"| {n} | {kind} | {_fmt(_ms(bare, 50))} / {_fmt(_ms(bare, 99))} "
                f"| {_fmt(_ms(rb, 50))} / {_fmt(_ms(rb, 99))} | {_fmt(_ratio(bare, rb), '.2f')}"
                f" | {failed} |")
    lines += ["", f"Median of the {len(runs)} runs:", "",
              "| request | bare p50 / p99 (ms) | rollbot p50 / p99 (ms) | ratio (p99) | target "
              "| met |", "|---|--:|--:|--:|--:|:-:|"]
    for kind in KINDS:
        def med(app: str, p: float, kind: str = kind) -> str:
            return _fmt(_median([_ms(r[(app, kind)], p) for r in runs]))
        ratio = _median([_ratio(r[("bare", kind)], r[("rollbot", kind)]) for r in runs])
        failed = sum(sum(r[(a, kind)].failures.values()) for r in runs for a in APPS)
        met = ("-" if ratio is None else "NO (requests not acked)" if failed
               else "yes" if ratio <= TARGET else "NO")
        lines.append(f"| {kind} | {med('bare', 50)} / {med('bare', 99)} | {med('rollbot', 50)}"
                     f" / {med('rollbot', 99)} | {_fmt(ratio, '.2f')}× | ≤ {TARGET:.1f}× "
                     f"| {met} |")
    notes = []
    for n, results in enumerate(runs, 1):
        for (name, kind), s in results.items():
            if s.failures:
                what = ", ".join(f"{k}: {v}" for k, v in sorted(s.failures.items()))
                notes.append(f"- run {n}, {name}, {kind}: not acked with HTTP 200 ({what}); "
                             "left out of the percentiles, and Slack would have shown those "
                             "users an error.")
    if partial:
        notes.append(f"- Stopped at the time limit ({args.time_limit:.0f} s): partial counts.")
    notes += [
        "- not acked: answers other than HTTP 200, and requests that failed or timed out "
        f"({SEND_TIMEOUT_S:.0f} s).",
        f"- Only 1% of the requests ({args.requests // 100} of {args.requests}) are over a "
        "p99, and one stall (a garbage collection in an app, the cores oversubscribed) hits "
        "all the requests then in flight at once: p99 moves from run to run, hence the median.",
    ]
    return "\n".join([*lines, "", *notes])


async def make_card(dsn: str, kind: str) -> str:
    """The id of the card to click: an already-cancelled one in rollbot's database, or unknown."""
    if kind == "unknown":
        return UNKNOWN_CARD
    from bot.model import ProcedureName, RollbackRequest
    from bot.store.runs import Store

    store = await Store.open(dsn)
    try:
        request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                                  target=None, requested_by=ALICE,
                                  reason="acknowledgement latency benchmark")
        pending = await store.approvals.propose(request, ttl=dt.timedelta(hours=1))
        await store.approvals.cancel(pending.id, by=ALICE)
        return pending.id
    finally:
        await store.close()


async def post_card(emu: Emulator, card: str) -> str:
    """A pre-flight card's Cancel button, as if rollbot had posted it; returns the message ts."""
    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    value = f'{{"card":"{card}"}}'
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Roll back production"}},
        {"type": "actions", "block_id": Block.CARD_ACTIONS.value, "elements": [
            {"type": "button", "action_id": Action.CANCEL_CARD.value, "value": value,
             "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]
    answer = await client.chat_postMessage(channel=INCIDENTS, text="Roll back production",
                                           blocks=blocks)
    return str(answer["ts"])


async def drive(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="rollbot-ack-"))
    os.chmod(tmp, 0o755)  # the postgres user must traverse it when we are root
    pg = EmbeddedPostgres(tmp / "pg")
    children: list[Child] = []
    started = time.monotonic()
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        print("starting the embedded PostgreSQL…", file=sys.stderr, flush=True)
        dsn = await asyncio.to_thread(pg.start)
        runbook = tmp / "rollbot.toml"
        runbook.write_text(RUNBOOK.format(tmp=tmp) + SLACK_TABLE)
        async with Emulator(token=TOKEN, signing_secret=SECRET) as emu:
            populate(emu)
            children.append(spawn("bare", ["--api-url", emu.api_url], tmp))
            children.append(spawn("rollbot", ["--api-url", emu.api_url, "--dsn", dsn,
                                              "--runbook", str(runbook)], tmp))
            for child in children:
                await wait_port(child)
            card_ts = await post_card(emu, await make_card(dsn, args.card))

            async def help_(sender: SlackSender, i: int) -> SendResult:
                return await sender.slash_command(ALICE, INCIDENTS, "help",
                                                  timeout=SEND_TIMEOUT_S)

            async def status(sender: SlackSender, i: int) -> SendResult:
                return await sender.slash_command(ALICE, INCIDENTS, "status",
                                                  timeout=SEND_TIMEOUT_S)

            async def click(sender: SlackSender, i: int) -> SendResult:
                return await sender.block_action(ALICE, INCIDENTS, card_ts,
                                                 Action.CANCEL_CARD.value,
                                                 timeout=SEND_TIMEOUT_S)

            sends = {"/rollback help": help_, "/rollback status": status,
                     "button click": click}
            deadline = started + args.time_limit
            print("warming up…", file=sys.stderr, flush=True)
            for child in children:
                for kind in KINDS:
                    await run_phase(child, emu, sends[kind], count=args.warmup,
                                    concurrency=args.concurrency, deadline=deadline, into=None)
            runs: list[Results] = []
            rounds = max(1, min(args.rounds, args.requests))
            for run in range(args.runs):
                results = {(c.name, k): Samples() for c in children for k in KINDS}
                runs.append(results)
                for r in range(rounds):
                    count = args.requests // rounds + (1 if r < args.requests % rounds else 0)
                    order = children if r % 2 == 0 else children[::-1]
                    print(f"run {run + 1}/{args.runs}, round {r + 1}/{rounds}: {count} "
                          "requests per kind per app…", file=sys.stderr, flush=True)
                    for kind in KINDS:
                        for child in order:
                            await run_phase(child, emu, sends[kind], count=count,
                                            concurrency=args.concurrency, deadline=deadline,
                                            into=results[(child.name, kind)])
            partial = time.monotonic() > deadline
            for child in children:
                if child.proc.poll() is not None:
                    raise RuntimeError(f"the {child.name} app exited during the run "
                                       f"(status {child.proc.returncode}); see {child.log}")
        print(report(runs, args, rounds, load, partial))
        for child in children:
            errors = child.log.read_text(errors="replace").count("Traceback")
            if errors:
                print(f"\n(the {child.name} app logged {errors} tracebacks; its log is kept at "
                      f"{child.log})", file=sys.stderr)
                args.keep = True
    finally:
        for child in children:
            stop_child(child)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg.stop)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", type=int, default=1000,
                   help="per kind per app per run (default 1000)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent senders (default 50)")
    p.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    p.add_argument("--rounds", type=int, default=4,
                   help="alternations of the apps per run (default 4)")
    p.add_argument("--warmup", type=int, default=100, help="per kind per app (default 100)")
    p.add_argument("--time-limit", type=float, default=1200.0,
                   help="seconds; stop sending after that and report what was measured")
    p.add_argument("--card", choices=("cancelled", "unknown"), default="cancelled",
                   help="the card whose Cancel button is clicked (default: one already "
                        "cancelled; unknown: one rollbot never proposed)")
    p.add_argument("--keep", action="store_true", help="keep the temp directory and app logs")
    p.add_argument("--serve", choices=APPS, help=argparse.SUPPRESS)
    p.add_argument("--api-url", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help=argparse.SUPPRESS)
    p.add_argument("--runbook", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (args.requests < 1 or args.concurrency < 1 or args.warmup < 0 or args.rounds < 1
            or args.runs < 1):
        p.error("--requests, --concurrency, --runs and --rounds must be positive, --warmup >= 0")
    return args


def main() -> None:
    args = parse_args()
    if args.serve == "bare":
        asyncio.run(serve_bare(args.api_url))
    elif args.serve == "rollbot":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(serve_rollbot(args.api_url, args.dsn, args.runbook))
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
