"""CI tells rollbot about a deploy, signed like Slack signs rollbot; anything else is refused.

The story: the deploy job asks rollbot whether v1.2.3 may go out, deploys it, and reports
``deployed`` (or ``migration_failed`` / ``start_failed``) with ``deploy/hook-client.sh``. A version
rollbot rolled back is quarantined and the job stops, saying who rolled it back and why. A request
signed with another secret, replayed later, or carrying a shell payload in a version is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.autorollback.contract import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AllowedQuery,
    BadSignature,
    DeployEvent,
    DeployStage,
    parse_event,
    parse_query,
    sign,
    verify,
)
from bot.errors import ConfigError, InvalidInput

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "deploy" / "hook-client.sh"
WORKFLOW = REPO / "deploy" / "github-actions" / "deploy-production.yml"
SECRET = "ci-and-rollbot-share-this-secret"
NOW = 1_760_000_000
BODY = b'{"environment": "production", "version": "v1.2.3"}'

EXAMPLE_EVENT: dict[str, str] = {
    "environment": "production", "version": "v1.2.3", "previous_version": "v1.2.2",
    "stage": "deployed", "commit": "4ae4651c0ffee", "actor": "alice",
    "run_url": "https://github.com/azora/api/actions/runs/42",
}


# --- signing -------------------------------------------------------------------------------------

def test_a_signed_request_verifies() -> None:
    signature = sign(SECRET, NOW, BODY)

    assert re.fullmatch(r"v0=[0-9a-f]{64}", signature)
    verify(SECRET, timestamp=str(NOW), signature=signature, body=BODY, now=NOW + 299)


def test_the_signature_is_slacks_scheme() -> None:
    # slack_sdk is an independent implementation of "v0:{timestamp}:{body}" HMAC-SHA256.
    slack = SignatureVerifier(SECRET).generate_signature(timestamp=str(NOW), body=BODY.decode())
    assert sign(SECRET, NOW, BODY) == slack


@pytest.mark.parametrize(("headers", "now", "body", "secret", "sentence"), [
    ({"timestamp": None, "signature": None}, NOW, BODY, SECRET,
     "has no X-Rollbot-Timestamp and no X-Rollbot-Signature header"),
    ({"timestamp": str(NOW), "signature": None}, NOW, BODY, SECRET,
     "has no X-Rollbot-Signature header"),
    ({"timestamp": "", "signature": "sig"}, NOW, BODY, SECRET,
     "has no X-Rollbot-Timestamp header"),
    ({"timestamp": "yesterday", "signature": "sig"}, NOW, BODY, SECRET,
     "X-Rollbot-Timestamp 'yesterday' is not a Unix time in seconds"),
    ({"timestamp": "-5", "signature": "sig"}, NOW, BODY, SECRET, "is not a Unix time"),
    ({"timestamp": str(NOW)}, NOW + 301, BODY, SECRET,
     "was signed 301 seconds ago, more than the 300 allowed, so it may be a replay"),
    ({"timestamp": str(NOW)}, NOW - 301, BODY, SECRET,
     "is timestamped 301 seconds in the future, more than the 300 allowed; check the CI "
     "runner's clock"),
    ({"timestamp": str(NOW)}, NOW, BODY, "someone-elses-secret",
     "X-Rollbot-Signature does not match its body"),
    ({"timestamp": str(NOW)}, NOW, BODY.replace(b"v1.2.3", b"v1.2.4"), SECRET,
     "does not match its body: CI's ROLLBOT_WEBHOOK_SECRET differs from rollbot's, or the body "
     "was changed on the way"),
    ({"timestamp": str(NOW + 1)}, NOW, BODY, SECRET, "does not match its body"),
    ({"timestamp": str(NOW), "signature": "v0=ünïcode"}, NOW, BODY, SECRET,
     "does not match its body"),
], ids=["missing-both", "missing-signature", "empty-timestamp", "non-numeric", "negative",
        "stale", "future", "wrong-secret", "tampered-body", "timestamp-swapped", "non-ascii"])
def test_refusals_say_why(headers: dict[str, str | None], now: int, body: bytes, secret: str,
                          sentence: str) -> None:
    signature = headers.get("signature", sign(SECRET, NOW, BODY))
    with pytest.raises(BadSignature, match=re.escape(sentence)) as refused:
        verify(secret, timestamp=headers["timestamp"], signature=signature, body=body, now=now)
    assert isinstance(refused.value, InvalidInput)
    assert str(refused.value).endswith("it was ignored and nothing was done.") or str(
        refused.value).endswith("It was ignored and nothing was done.")


def test_an_empty_secret_is_a_configuration_error_not_a_key() -> None:
    with pytest.raises(ConfigError, match="ROLLBOT_WEBHOOK_SECRET is empty"):
        sign("", NOW, BODY)
    with pytest.raises(ConfigError, match="ROLLBOT_WEBHOOK_SECRET is empty"):
        verify("", timestamp=str(NOW), signature=sign(SECRET, NOW, BODY), body=BODY, now=NOW)


# --- bodies --------------------------------------------------------------------------------------

def _body(**changes: Any) -> bytes:
    event: dict[str, Any] = {**EXAMPLE_EVENT, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def test_the_example_event_parses() -> None:
    event = parse_event(_body())

    assert event == DeployEvent(**EXAMPLE_EVENT)  # type: ignore[arg-type]
    assert event.stage is DeployStage.DEPLOYED
    minimal = parse_event(_body(commit=..., actor=..., run_url=..., stage="start_failed"))
    assert (minimal.commit, minimal.actor, minimal.run_url) == ("", "", "")
    assert minimal.stage is DeployStage.START_FAILED


@pytest.mark.parametrize(("body", "sentence"), [
    (_body(version="v1.2.3; rm -rf /"),
     "The deploy hook field 'version' is not accepted: 'v1.2.3; rm -rf /' is not a release "
     "version."),
    (_body(previous_version="latest"), "field 'previous_version' is not accepted: 'latest'"),
    (_body(version=123), "field 'version' must be a JSON string."),
    (_body(stage="rolled_back"),
     "field 'stage' is 'rolled_back'; it must be one of deployed, migration_failed, "
     "start_failed."),
    (_body(extra="x"), "has an unknown field 'extra'; the fields are environment, version"),
    (_body(stage=...), "has no 'stage' field, which is required."),
    (_body(environment="production\n"), "field 'environment' must be 1 to 64 letters"),
    (_body(environment="p" * 65), "field 'environment' must be 1 to 64 letters"),
    (_body(commit="HEAD~1"), "field 'commit' must be a git commit id"),
    (_body(actor="alice\nRolled back by: mallory"), "field 'actor' must be at most 100"),
    (_body(actor="a" * 101), "field 'actor' must be at most 100"),
    (_body(run_url="javascript:alert(1)"), "field 'run_url' must be an http:// or https://"),
    (_body(run_url="https://x/" + "a" * 500), "field 'run_url' must be"),
    (b'{"environment": "production",', "The deploy hook body is not valid JSON"),
    (b"\xff\xfe", "The deploy hook body is not valid JSON"),
    (b'["production"]', "The deploy hook body must be a JSON object with the fields"),
    (b" " * 20_000, "body is 20000 bytes; at most 16384 are accepted."),
], ids=["shell-in-version", "latest", "number", "stage", "unknown-field", "missing-stage",
        "newline-env", "long-env", "commit", "actor-newline", "actor-long", "run-url-scheme",
        "run-url-long", "bad-json", "not-utf8", "not-object", "huge"])
def test_bad_events_are_refused_naming_the_field(body: bytes, sentence: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(sentence)):
        parse_event(body)


def test_the_allowed_question_parses_and_refuses() -> None:
    assert parse_query(BODY) == AllowedQuery(environment="production", version="v1.2.3")
    with pytest.raises(InvalidInput, match="deploy-allowed field 'version' is not accepted"):
        parse_query(b'{"environment": "production", "version": "v1.2.3`id`"}')
    with pytest.raises(InvalidInput, match="deploy-allowed body has an unknown field 'stage'"):
        parse_query(b'{"environment": "production", "version": "v1.2.3", "stage": "deployed"}')


# --- the shell client against a rollbot stand-in over real HTTP ----------------------------------

@dataclass
class FakeRollbot:
    """The server side of the hook as far as signing goes: verify, parse, answer."""

    url: str
    events: list[DeployEvent] = field(default_factory=list)
    questions: list[AllowedQuery] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    quarantined: dict[str, dict[str, object]] = field(default_factory=dict)


@pytest.fixture
async def rollbot() -> AsyncIterator[FakeRollbot]:
    fake = FakeRollbot(url="")

    async def checked(request: web.Request) -> bytes:
        body = await request.read()
        verify(SECRET, timestamp=request.headers.get(TIMESTAMP_HEADER),
               signature=request.headers.get(SIGNATURE_HEADER), body=body, now=time.time())
        return body

    async def deploy(request: web.Request) -> web.Response:
        try:
            fake.events.append(parse_event(await checked(request)))
        except BadSignature as err:
            fake.refused.append(str(err))
            return web.json_response({"error": str(err)}, status=401)
        except InvalidInput as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"ok": True})

    async def allowed(request: web.Request) -> web.Response:
        try:
            query = parse_query(await checked(request))
        except BadSignature as err:
            fake.refused.append(str(err))
            return web.json_response({"error": str(err)}, status=401)
        fake.questions.append(query)
        if query.version in fake.quarantined:
            return web.json_response(
                {"allowed": False, **fake.quarantined[query.version]}, status=409)
        return web.json_response({"allowed": True})

    app = web.Application()
    app.router.add_post("/hooks/deploy", deploy)
    app.router.add_post("/hooks/deploy/allowed", allowed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


# Everything hook-client.sh may call; the "no jq" PATH holds exactly these.
CLIENT_TOOLS = ("bash", "curl", "openssl", "date", "sed", "mktemp", "rm")


@pytest.fixture(params=["with-jq", "without-jq"])
def tool_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "with-jq":
        if shutil.which("jq") is None:
            pytest.fail("jq is missing: ./run installs it (Debian package jq)")
        return os.environ["PATH"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in CLIENT_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by hook-client.sh"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@dataclass
class ClientRun:
    exit_code: int
    out: str
    err: str


async def run_client(*args: str, path: str, secret: str | None = SECRET) -> ClientRun:
    env = {"PATH": path}  # no proxies inherited: 127.0.0.1 must be reached directly
    if secret is not None:
        env["ROLLBOT_WEBHOOK_SECRET"] = secret
    proc = await asyncio.create_subprocess_exec(
        shutil.which("bash") or "bash", str(CLIENT), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return ClientRun(proc.returncode, out.decode(), err.decode())


async def test_ci_reports_a_deploy_and_rollbot_verifies_it(rollbot: FakeRollbot,
                                                           tool_path: str) -> None:
    actor = 'O\'Brien "ops" \\ Ünal'  # quotes, a backslash and UTF-8 survive JSON encoding
    run = await run_client(
        "deploy", rollbot.url + "/", "production", "v1.2.3", "v1.2.2", "migration_failed",
        "4ae4651c0ffee", actor, "https://github.com/azora/api/actions/runs/42?a=1&b=2",
        path=tool_path)

    assert run.exit_code == 0, run.err
    assert "accepted the deploy event 'migration_failed' for v1.2.3" in run.out
    assert "HTTP 200" in run.out
    assert rollbot.refused == []
    assert rollbot.events == [DeployEvent(
        environment="production", version="v1.2.3", previous_version="v1.2.2",
        stage=DeployStage.MIGRATION_FAILED, commit="4ae4651c0ffee", actor=actor,
        run_url="https://github.com/azora/api/actions/runs/42?a=1&b=2")]


async def test_optional_fields_may_be_left_out(rollbot: FakeRollbot, tool_path: str) -> None:
    run = await run_client("deploy", rollbot.url, "production", "v1.2.3", "v1.2.2", "deployed",
                           path=tool_path)

    assert run.exit_code == 0, run.err
    assert [(e.stage, e.commit, e.actor, e.run_url) for e in rollbot.events] == [
        (DeployStage.DEPLOYED, "", "", "")]


async def test_an_allowed_version_exits_0(rollbot: FakeRollbot, tool_path: str) -> None:
    run = await run_client("allowed", rollbot.url, "production", "v1.2.4", path=tool_path)

    assert run.exit_code == 0, run.err
    assert "v1.2.4 may be deployed to production (HTTP 200)" in run.out
    assert rollbot.questions == [AllowedQuery(environment="production", version="v1.2.4")]


async def test_a_quarantined_version_exits_1_saying_who_and_why(rollbot: FakeRollbot,
                                                               tool_path: str) -> None:
    rollbot.quarantined["v1.2.3"] = {
        "quarantined_by": "bob", "at": "2025-06-01T03:12:00Z",
        "reason": 'migration 0042 locked "orders"\nfor 10 minutes'}

    run = await run_client("allowed", rollbot.url, "production", "v1.2.3", path=tool_path)

    assert run.exit_code == 1, run.err
    assert "v1.2.3 is QUARANTINED in production and must not be deployed (HTTP 409)" in run.out
    assert ('rolled back by bob at 2025-06-01T03:12:00Z: migration 0042 locked "orders"'
            in run.out)
    assert rollbot.refused == []


async def test_a_forged_secret_is_refused_and_the_client_exits_2(rollbot: FakeRollbot,
                                                                 tool_path: str) -> None:
    for args in (("deploy", rollbot.url, "production", "v1.2.3", "v1.2.2", "deployed"),
                 ("allowed", rollbot.url, "production", "v1.2.3")):
        run = await run_client(*args, path=tool_path, secret="guessed-secret")

        assert run.exit_code == 2
        assert "rollbot answered HTTP 401" in run.err
        assert "does not match its body" in run.err  # rollbot's sentence reaches the CI log
    assert len(rollbot.refused) == 2 and rollbot.events == [] and rollbot.questions == []


@pytest.mark.parametrize(("args", "complaint"), [
    (("deploy", "{url}", "production", "v1.2.3; rm -rf /", "v1.2.2", "deployed"),
     "version 'v1.2.3; rm -rf /' is not a release version"),
    (("deploy", "{url}", "production", "v1.2.3", "$(id)", "deployed"),
     "previous version '$(id)' is not a release version"),
    (("deploy", "{url}", "prod\"uction", "v1.2.3", "v1.2.2", "deployed"),
     "environment 'prod\"uction' is not 1 to 64"),
    (("deploy", "{url}", "production", "v1.2.3", "v1.2.2", "rolled_back"),
     "stage 'rolled_back' is not deployed, migration_failed or start_failed"),
    (("deploy", "{url}", "production", "v1.2.3", "v1.2.2", "deployed", "main"),
     "commit 'main' is not a commit id"),
    (("deploy", "{url}", "production", "v1.2.3", "v1.2.2", "deployed", "", "a\nb"),
     "actor must be at most 100 bytes without control characters"),
    (("deploy", "{url}", "production", "v1.2.3", "v1.2.2", "deployed", "", "", "file:///x"),
     "run URL must be an http(s) URL"),
    (("allowed", "ftp://rollbot", "production", "v1.2.3"), "URL 'ftp://rollbot' is not"),
    (("allowed", "{url}", "production"), "usage: hook-client.sh"),
    (("rollback", "{url}", "production", "v1.2.3"), "usage: hook-client.sh"),
], ids=["shell-in-version", "shell-in-previous", "quote-in-env", "stage", "commit", "actor",
        "run-url", "url-scheme", "too-few", "unknown-command"])
async def test_the_client_refuses_bad_values_before_sending(
        rollbot: FakeRollbot, tool_path: str, args: tuple[str, ...], complaint: str) -> None:
    run = await run_client(*(a.format(url=rollbot.url) for a in args), path=tool_path)

    assert run.exit_code == 2
    assert complaint in run.err
    assert rollbot.events == [] and rollbot.questions == [] and rollbot.refused == []


async def test_the_client_refuses_to_run_without_the_secret(rollbot: FakeRollbot,
                                                            tool_path: str) -> None:
    for secret in (None, ""):
        run = await run_client("allowed", rollbot.url, "production", "v1.2.3", path=tool_path,
                               secret=secret)
        assert run.exit_code == 2
        assert "ROLLBOT_WEBHOOK_SECRET is not set; refusing to send an unsigned request" in run.err
    assert rollbot.questions == []


async def test_an_unreachable_rollbot_exits_2(tool_path: str) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    run = await run_client("allowed", f"http://127.0.0.1:{port}", "production", "v1.2.3",
                           path=tool_path)

    assert run.exit_code == 2
    assert f"could not reach rollbot at http://127.0.0.1:{port}/hooks/deploy/allowed" in run.err


def test_the_client_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(CLIENT)], check=True)


# --- the GitHub Actions workflow -----------------------------------------------------------------

def _steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps: list[dict[str, Any]] = workflow["jobs"]["deploy"]["steps"]
    return steps


def test_the_workflow_asks_first_reports_after_and_never_rolls_back_itself() -> None:
    steps = _steps()
    runs = [s.get("run", "") for s in steps]
    asks = next(i for i, r in enumerate(runs) if '"$HOOK" allowed' in r)
    deploys = next(i for i, r in enumerate(runs) if "docker pull" in r)
    assert asks < deploys
    stages = {stage: s for s in steps for stage in DeployStage if f" {stage.value} " in
              s.get("run", "")}
    assert set(stages) == set(DeployStage)
    assert "steps.migrate.outcome == 'failure'" in stages[DeployStage.MIGRATION_FAILED]["if"]
    assert "steps.health.outcome == 'failure'" in stages[DeployStage.START_FAILED]["if"]
    assert "if" not in stages[DeployStage.DEPLOYED]  # only when every step before succeeded
    assert not any("docker-compose down" in r for r in runs)
    for step in stages.values():
        assert set(step["env"]) >= {"ROLLBOT_URL", "ROLLBOT_WEBHOOK_SECRET"}


def test_workflow_scripts_are_valid_bash_without_pasted_expressions() -> None:
    for step in _steps():
        script = step.get("run")
        if script is None:
            continue
        assert "${{" not in script, f"{step['name']}: pass values through env, not ${{{{ }}}}"
        subprocess.run(["bash", "-n"], input=script.encode(), check=True)


def test_the_workflow_reads_and_switches_the_image_tag_on_the_host(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n  api:\n    image: \"azora-api:v1.2.2\"  # pinned\n"
        "  db:\n    image: postgres:16\n")
    fake_ssh = tmp_path / "bin" / "ssh"
    fake_ssh.parent.mkdir()
    fake_ssh.write_text('#!/bin/sh\nshift\nexec "$@"\n')  # "prod-user@prod-host" runs locally
    fake_ssh.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_ssh.parent}:{os.environ['PATH']}",
           "PROD": "prod-user@prod-host", "COMPOSE_DIR": str(tmp_path), "VERSION": "v1.2.3",
           "GITHUB_OUTPUT": str(tmp_path / "output")}
    steps = {s.get("name"): s.get("run", "") for s in _steps()}

    def step(name: str) -> None:
        subprocess.run(["bash", "-eo", "pipefail", "-c", steps[name]], env=env, check=True,
                       capture_output=True)

    step("Record the running version")
    step("Point the compose file at the new version")

    assert (tmp_path / "output").read_text() == "version=v1.2.2\n"
    assert compose.read_text() == (
        "services:\n  api:\n    image: \"azora-api:v1.2.3\"  # pinned\n"
        "  db:\n    image: postgres:16\n")
