"""Signed events out, without I/O: the [notify] table, the body, the signature, the retry rule."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.autorollback.contract import BadSignature, sign, verify
from bot.config import load_runbook
from bot.errors import ConfigError
from bot.model import ProcedureName, RunRecord, RunStatus
from bot.notify import notices
from bot.notify.config import (
    ALL_EVENTS,
    RETRY_DELAYS_S,
    EventName,
    environment_secrets,
    resolve_webhooks,
)
from bot.notify.send import judge

EXAMPLE = Path(__file__).parent / "data" / "rollbot.example.toml"
HOOK = 'url = "https://status.example.com/hooks/rollbot"\nsecret_env = "STATUS_SECRET"\n'


def runbook_with(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "rollbot.toml"
    path.write_text(EXAMPLE.read_text() + "\n" + notify)
    return path


def test_a_webhook_gets_every_event_by_default_and_its_secret_from_the_environment(
    tmp_path: Path
) -> None:
    rb = load_runbook(runbook_with(tmp_path, f"[[notify.webhooks]]\n{HOOK}"))
    [hook] = resolve_webhooks(rb.notify, {"STATUS_SECRET": "s3cret"}.get)
    assert hook.url == "https://status.example.com/hooks/rollbot"
    assert hook.events == frozenset(ALL_EVENTS) and len(ALL_EVENTS) == 6
    assert hook.secret == "s3cret" and "s3cret" not in repr(hook)
    assert rb.notify.retry_delays_s == RETRY_DELAYS_S
    # the spec: at least 5 tries over about 10 minutes
    assert len(RETRY_DELAYS_S) + 1 >= 5 and 540 <= sum(RETRY_DELAYS_S) <= 720


def test_without_a_notify_table_nothing_is_sent_and_nothing_is_required(tmp_path: Path) -> None:
    rb = load_runbook(EXAMPLE)
    assert resolve_webhooks(rb.notify, {}.get) == ()


@pytest.mark.parametrize(("entry", "secrets", "says"), [
    ('url = "ftp://status.example.com/x"\nsecret_env = "S"\n', {"S": "x"},
     "notify.webhooks[0] (ftp://status.example.com/x): url must be an http:// or https://"),
    (HOOK + 'events = ["rollback.started", "rollback.exploded"]\n', {"STATUS_SECRET": "x"},
     "'rollback.exploded' is not an event rollbot sends; the events are rollback.started,"),
    (HOOK, {}, "the environment variable STATUS_SECRET is not set; it must hold the secret"),
    (HOOK, {"STATUS_SECRET": ""}, "the environment variable STATUS_SECRET is empty"),
    (HOOK + "events = []\n", {"STATUS_SECRET": "x"}, "events is empty; leave it out"),
])
def test_a_bad_webhook_stops_rollbot_with_a_sentence_naming_it(
    tmp_path: Path, entry: str, secrets: dict[str, str], says: str
) -> None:
    rb = load_runbook(runbook_with(tmp_path, f"[[notify.webhooks]]\n{entry}"))
    with pytest.raises(ConfigError) as err:
        resolve_webhooks(rb.notify, secrets.get)
    assert says in str(err.value)


def test_a_typo_in_the_notify_table_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'notify.webhooks.0.secret' is not a known"):
        load_runbook(runbook_with(tmp_path, f'[[notify.webhooks]]\n{HOOK}'
                                            'secret = "inline"\n'))


def test_the_secret_may_come_from_the_env_file_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STATUS_SECRET=from-file\nOTHER=file-only\n")
    lookup = environment_secrets({"STATUS_SECRET": "from-env"}, env_file)
    assert lookup("STATUS_SECRET") == "from-env"
    assert lookup("OTHER") == "file-only"
    assert lookup("MISSING") is None
    assert environment_secrets({}, tmp_path / "absent")("OTHER") is None


def _run(status: RunStatus = RunStatus.SUCCEEDED) -> RunRecord:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return RunRecord(id=42, environment="production", procedure=ProcedureName.SIMPLE,
                     status=status, requested_by="U0ALICE", reason="checkout 500s",
                     from_version="v1.2.3", to_version="v1.2.2", backup=None, created_at=at,
                     finished_at=at, host_state="v1.2.2 running", message="done")


def test_the_body_has_the_documented_shape_and_verifies_like_the_deploy_hook() -> None:
    notice = notices.rollback_ended(_run())
    assert notice is not None and notice.event == EventName.ROLLBACK_SUCCEEDED
    sent = datetime.now(UTC)
    data = notices.body(notice.payload(), sent_at=sent,
                        live_message_url="https://slack.example/archives/C1/p1")
    got = json.loads(data)
    assert list(got)[:2] == ["event", "sent_at"]
    assert got["event"] == "rollback.succeeded" and got["environment"] == "production"
    assert got["id"] == notice.id and got["sent_at"].endswith("Z")
    assert got["run"] == {"id": 42, "from_version": "v1.2.3", "to_version": "v1.2.2",
                          "procedure": "simple", "requested_by": "U0ALICE",
                          "outcome": "succeeded",
                          "live_message_url": "https://slack.example/archives/C1/p1"}
    ts = int(time.time())
    verify("s3cret", timestamp=str(ts), signature=sign("s3cret", ts, data), body=data,
           now=time.time())
    with pytest.raises(BadSignature):
        verify("s3cret", timestamp=str(ts), signature=sign("s3cret", ts, data + b" "),
               body=data, now=time.time())


def test_each_ending_maps_to_its_event_and_a_refusal_sends_nothing() -> None:
    ends = {s: notices.rollback_ended(_run(s)) for s in RunStatus
            if s not in (RunStatus.PREFLIGHT, RunStatus.RUNNING)}
    assert ends[RunStatus.REFUSED] is None
    failed = [s for s, n in ends.items() if n is not None and n.event == "rollback.failed"]
    assert set(failed) == {RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED,
                           RunStatus.RESTORE_RECOMMENDED}
    cancelled = ends[RunStatus.CANCELLED]
    assert cancelled is not None and cancelled.run is not None
    assert cancelled.run.outcome == "cancelled"
    # one key per happening: the outbox writes it once however often a hook fires
    assert notices.rollback_ended(_run()).key == notices.rollback_ended(_run()).key  # type: ignore[union-attr]
    assert notices.rollback_started(_run()).key != notices.rollback_ended(_run()).key  # type: ignore[union-attr]


@pytest.mark.parametrize(("status", "delivered", "retry"), [
    (200, True, False), (204, True, False), (500, False, True), (503, False, True),
    (408, False, True), (429, False, True), (400, False, False), (401, False, False),
    (404, False, False), (301, False, False),
])
def test_errors_and_5xx_are_retried_other_4xx_are_final(status: int, delivered: bool,
                                                        retry: bool) -> None:
    answer = judge("https://x/hook", status, "nope")
    assert (answer.delivered, answer.retry, answer.status) == (delivered, retry, status)
    assert f"https://x/hook answered {status}" in answer.said


@pytest.mark.parametrize("command", [["rollback", "v1.2.2", "--yes"], ["serve"],
                                     ["notify", "test"]])
def test_rollbot_does_not_start_with_an_unset_webhook_secret(tmp_path: Path,
                                                             command: list[str]) -> None:
    path = runbook_with(tmp_path, f"[[notify.webhooks]]\n{HOOK}")
    out = subprocess.run(
        [sys.executable, "-m", "bot", *command],
        env={"ROLLBOT_CONFIG": str(path), "PATH": "/usr/bin:/bin",
             "ROLLBOT_DATA_DIR": str(tmp_path / "data"), "SLACK_BOT_TOKEN": "xoxb-1",
             "SLACK_SIGNING_SECRET": "s"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stdout.split())
    assert ("notify.webhooks[0] (https://status.example.com/hooks/rollbot): the environment "
            "variable STATUS_SECRET is not set") in said
    assert not (tmp_path / "data").exists()  # not even the database was started


def test_the_readme_receiver_accepts_rollbots_signature_and_refuses_old_or_forged_ones(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("**A receiver** (Python standard library)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("ROLLBOT_NOTIFY_SECRET", "s3cret")
    receiver: dict[str, object] = {"__name__": "readme_receiver"}
    exec(compile(code, "README receiver", "exec"), receiver)  # the README's own snippet
    check = receiver["signed_by_rollbot"]
    assert callable(check)
    notice = notices.rollback_ended(_run())
    assert notice is not None
    data = notices.body(notice.payload(), sent_at=datetime.now(UTC))
    now = int(time.time())
    assert check(str(now), sign("s3cret", now, data), data, now + 10)
    assert not check(str(now), sign("s3cret", now, data), data, now + 301)  # a replay
    assert not check(str(now), sign("other", now, data), data, now)          # another secret
    assert not check(str(now), sign("s3cret", now, data), data + b"x", now)  # body changed
