"""A bad runbook stops rollbot before anything connects, naming the file and the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_runbook
from bot.errors import ConfigError

EXAMPLE = Path(__file__).parent / "data" / "rollbot.example.toml"
ROOT = Path(__file__).parent.parent


def test_the_documented_runbook_loads() -> None:
    rb = load_runbook(EXAMPLE)
    name, env = rb.environment(None)
    assert name == "production"
    assert env.ssh.port == 22
    assert env.compose.project_name == "azora"
    assert env.database is not None and env.database.verify_tables == ("users", "orders")
    assert env.database.migrations_to_undo == 1


def test_the_shipped_example_is_the_documented_one() -> None:
    shipped = load_runbook(ROOT / "rollbot.example.toml")
    assert shipped.environments == load_runbook(EXAMPLE).environments
    assert shipped.slack is not None and shipped.slack.restore_requires_second_approver


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "rollbot.toml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new", "key"), [
    ("port = 22", 'port = "twenty-two"', "environments.production.ssh.port"),
    ('user = "prod-user"\n', "", "environments.production.ssh.user' is missing"),
    ('service = "api"', 'service = "api"\nservise = "x"', "servise' is not a known setting"),
    ('file = "/srv/azora/docker-compose.yml"', 'file = "docker-compose.yml"',
     "environments.production.compose.file"),
    ('default_environment = "production"', 'default_environment = "prod"', "default_environment"),
    ('name = "azora_prod"', 'name = "azora; DROP"', "environments.production.database.name"),
    ('backup_glob = "azora_prod_*.sql.gz"', 'backup_glob = "$(id).gz"', "backup_glob"),
    ("retention_days = 30", "retention_days = 0", "retention_days"),
    ("migrations_to_undo = 1 ", "migrations_to_undo = 0 ",
     "environments.production.database.migrations_to_undo"),
])
def test_each_fault_names_file_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert str(err.value).startswith(f"{path}: ")
    assert key in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[environments\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_runbook(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_runbook(tmp_path / "nope.toml")


def test_cli_exits_2_before_connecting(tmp_path: Path) -> None:
    path = _broken(tmp_path, "port = 22", "port = 99999")
    out = subprocess.run(
        [sys.executable, "-m", "bot", "rollback", "v1.2.2", "--yes"],
        env={"ROLLBOT_CONFIG": str(path), "PATH": "/usr/bin:/bin",
             "ROLLBOT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "environments.production.ssh.port" in out.stdout
    assert not (tmp_path / "data").exists()  # not even the database was started


@pytest.mark.parametrize(("old", "new", "says"), [
    ("max_warning_lines = 20", 'error_log_pattern = "(ERROR"',
     "key 'environments.production.error_log_pattern': Value error, is not a valid regular "
     "expression: missing ), unterminated subpattern at position 0"),
    ("max_warning_lines = 20", 'error_log_pattern = "ERROR|"',
     "matches an empty line, so every log line would count"),
    ("max_warning_lines = 20", "max_warning_lines = -1",
     "key 'environments.production.max_warning_lines'"),
    ("max_row_loss_ratio = 0.01", "max_row_loss_ratio = 1.5",
     "key 'environments.production.max_row_loss_ratio'"),
])
def test_verification_thresholds_are_checked_at_load(tmp_path: Path, old: str, new: str,
                                                     says: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert str(err.value).startswith(f"{path}: ")
    assert says in str(err.value)


def test_verification_thresholds_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    from bot.post_rollback.log_scan import DEFAULT_ERROR_LOG_PATTERN

    without = tmp_path / "without.toml"
    without.write_text("".join(line for line in EXAMPLE.read_text().splitlines(keepends=True)
                               if not line.startswith(("max_warning_lines",
                                                       "max_row_loss_ratio"))))
    _, env = load_runbook(without).environment(None)
    assert (env.error_log_pattern, env.max_warning_lines, env.max_row_loss_ratio) == (
        DEFAULT_ERROR_LOG_PATTERN, 20, 0.01)
    path = _broken(tmp_path, "max_warning_lines = 20", "error_log_pattern = "
                   "'payment declined|\\bERROR\\b'\nmax_warning_lines = 0")
    _, env = load_runbook(path).environment(None)
    assert (env.error_log_pattern, env.max_warning_lines) == (r"payment declined|\bERROR\b", 0)


FLEET = '''
[environments.production.fleet]
canary = 1
batch_size = 2
max_failed_hosts = 0
[[environments.production.hosts]]
name = "web-1"
ssh = { host = "10.0.0.11" }
[[environments.production.hosts]]
name = "web-2"
ssh = { host = "10.0.0.12", port = 2222 }
compose = { file = "/srv/shop/docker-compose.yml", project = "shop" }
health_url = "http://10.0.0.12:8080/health"
version_url = "http://10.0.0.12:8080/version"
'''


def _fleet(tmp_path: Path, fleet: str = FLEET, *, old: str = "", new: str = "") -> Path:
    text = EXAMPLE.read_text()
    head, sep, tail = text.partition("[environments.production.ssh]")
    assert sep
    path = tmp_path / "rollbot.toml"
    path.write_text(head + fleet + sep + tail)
    if old:
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
    return path


def test_a_fleet_merges_each_host_over_the_environment(tmp_path: Path) -> None:
    _, env = load_runbook(_fleet(tmp_path)).environment(None)
    (n1, web1), (n2, web2) = env.members
    assert (n1, n2) == ("web-1", "web-2")
    assert (web1.ssh.host, web1.ssh.port, web1.ssh.user) == ("10.0.0.11", 22, "prod-user")
    assert (web2.ssh.host, web2.ssh.port, web2.ssh.user) == ("10.0.0.12", 2222, "prod-user")
    assert web1.compose.file == "/srv/azora/docker-compose.yml"      # the environment's
    assert (web2.compose.file, web2.compose.project) == ("/srv/shop/docker-compose.yml", "shop")
    assert web2.compose.command == env.compose.command                # merged, not replaced
    assert web1.health_url == env.health_url != web2.health_url
    assert web2.version_url == "http://10.0.0.12:8080/version"
    assert env.ssh == web1.ssh and env.database_member[0] == "web-1"
    assert (env.fleet.canary, env.fleet.batch_size, env.fleet.max_failed_hosts) == (1, 2, 0)


def test_without_hosts_an_environment_is_one_host(tmp_path: Path) -> None:
    _, env = load_runbook(EXAMPLE).environment(None)
    assert env.members == ((env.ssh.host, env),)
    assert env.services == {"api": "azora-api"}


def test_a_service_map_switches_several_images(tmp_path: Path) -> None:
    path = _broken(tmp_path, 'service = "api"\nimage = "azora-api"',
                   'services = { api = "azora-api", worker = "azora-worker" }')
    _, env = load_runbook(path).environment(None)
    assert env.services == {"api": "azora-api", "worker": "azora-worker"}
    assert (env.service, env.image) == ("api", "azora-api")


@pytest.mark.parametrize(("old", "new", "says"), [
    ('name = "web-2"', 'name = "web-1"',
     "key 'environments.production.hosts': two hosts are named 'web-1'"),
    ("canary = 1", "canary = 3",
     "key 'environments.production.fleet.canary': 3 canary hosts, but the environment has 2"),
    ("batch_size = 2", "batch_size = 0", "key 'environments.production.fleet.batch_size'"),
    ("max_failed_hosts = 0", "max_failed_hosts = -1",
     "key 'environments.production.fleet.max_failed_hosts'"),
    ('name = "web-2"', 'name = "web 2"', "key 'environments.production.hosts"),
    ('ssh = { host = "10.0.0.11" }', 'ssh = { host = "10.0.0.11" }\nimage = "other"',
     "key 'environments.production.hosts[0].image': not a per-host setting"),
    ('ssh = { host = "10.0.0.12", port = 2222 }', 'ssh = { host = "10.0.0.12", port = 0 }',
     "key 'environments.production.hosts[1].ssh.port': Input should be greater than or equal"),
    ("retention_days = 30", 'retention_days = 30\nhost = "db-9"',
     "key 'environments.production.database.host': 'db-9' is not one of the hosts"),
])
def test_a_bad_fleet_is_refused_at_load_naming_the_key(tmp_path: Path, old: str, new: str,
                                                       says: str) -> None:
    path = _fleet(tmp_path, old=old, new=new)
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert str(err.value).startswith(f"{path}: ")
    assert says in str(err.value)


def test_a_service_map_naming_one_image_twice_is_refused(tmp_path: Path) -> None:
    path = _broken(tmp_path, 'service = "api"\nimage = "azora-api"',
                   'services = { api = "azora-api", worker = "azora-api" }')
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert ("key 'environments.production.services': image 'azora-api' is named by two "
            "services") in str(err.value)


def test_a_bad_fleet_exits_2_in_the_cli(tmp_path: Path) -> None:
    path = _fleet(tmp_path, old="canary = 1", new="canary = 5")
    out = subprocess.run(
        [sys.executable, "-m", "bot", "plan", "v1.2.2"],
        env={"ROLLBOT_CONFIG": str(path), "PATH": "/usr/bin:/bin",
             "ROLLBOT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "environments.production.fleet.canary" in out.stdout
