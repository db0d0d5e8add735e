"""Secrets in runbook commands, errors, output and logs are hidden; ordinary text is not."""

from __future__ import annotations

import logging

import pytest

from bot.config import DatabaseConfig
from bot.errors import CommandFailed, HostError
from bot.procedures import commands as cmd
from bot.redaction import MASK, RedactingFilter, install_log_redaction, is_secret_name, redact

PW = "Xq7-s3cret"


@pytest.mark.parametrize(("text", "expected"), [
    # the runbook's psql and pg_dump, as people write them
    (f"env PGPASSWORD={PW} psql -X -h db -U postgres",
     "env PGPASSWORD=*** psql -X -h db -U postgres"),
    (f"PGPASSWORD={PW} pg_dump -U postgres", "PGPASSWORD=*** pg_dump -U postgres"),
    (f"docker exec -e PGPASSWORD={PW} -i prod-db psql -U postgres",
     "docker exec -e PGPASSWORD=*** -i prod-db psql -U postgres"),
    (f"env PGPASSWORD='{PW} with spaces' psql", "env PGPASSWORD=*** psql"),
    (f'env PGPASSWORD="{PW} \\"quoted\\"" psql', "env PGPASSWORD=*** psql"),
    (f"env PGPASSWORD={PW}\\ x psql", "env PGPASSWORD=*** psql"),
    (f"DB_PASS={PW}; DB_PASSWD={PW}", "DB_PASS=***; DB_PASSWD=***"),
    (f"GITHUB_TOKEN={PW} client_secret={PW}", "GITHUB_TOKEN=*** client_secret=***"),
    (f"API_KEY={PW} apiKey={PW} APIKEY={PW} AWS_SECRET_ACCESS_KEY={PW}",
     "API_KEY=*** apiKey=*** APIKEY=*** AWS_SECRET_ACCESS_KEY=***"),
    (f"MYSQL_PWD={PW} mysql", "MYSQL_PWD=*** mysql"),
    # options
    (f"migrate --password={PW} --db-password={PW} --api-key={PW}",
     "migrate --password=*** --db-password=*** --api-key=***"),
    (f"java -Ddb.password={PW} -jar app.jar", "java -Ddb.password=*** -jar app.jar"),
    # URL credentials
    (f"psql postgresql://azora:{PW}@db:5432/azora_prod -c 'SELECT 1'",
     "psql postgresql://azora:***@db:5432/azora_prod -c 'SELECT 1'"),
    (f"env DATABASE_URL=postgres://u:{PW}@127.0.0.1/app npm run migrate:down",
     "env DATABASE_URL=postgres://u:***@127.0.0.1/app npm run migrate:down"),
    (f"git clone https://x-access-token:{PW}@github.com/o/r",
     "git clone https://x-access-token:***@github.com/o/r"),
    (f"error: cannot connect to 'mysql://root:{PW}@db/x'",
     "error: cannot connect to 'mysql://root:***@db/x'"),
    # headers
    (f'curl -H "Authorization: Bearer {PW}" https://azora.world/health',
     'curl -H "Authorization: Bearer ***" https://azora.world/health'),
    (f"https://azora.world/api?token={PW}&page=2", "https://azora.world/api?token=***&page=2"),
])
def test_secrets_are_hidden(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert PW not in redact(text)
    assert redact(redact(text)) == redact(text)  # safe to apply twice


@pytest.mark.parametrize("text", [
    "KEYBOARD_LAYOUT=us monkey=1 TURKEY=2 hockey=3",
    "PWD=/srv/azora OLDPWD=/root",
    "psql -X -v ON_ERROR_STOP=1 -d azora_prod -c 'SELECT * FROM migrations'",
    "docker exec -i prod-db psql -U postgres --no-password",
    "cd /srv/azora && docker-compose -f /srv/azora/docker-compose.yml up -d",
    "ssh://git@github.com/o/r and mailto:a@b.c",
    "http://127.0.0.1:8080/health?user=a@b.c",
    "GET https://azora.world/version must report v1.2.2",
    "PGPASSWORD= psql",  # nothing to hide
    "",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_secret_names() -> None:
    assert is_secret_name("PGPASSWORD") and is_secret_name("db-password")
    assert is_secret_name("SLACK_BOT_TOKEN") and is_secret_name("private_key")
    assert not is_secret_name("KEYBOARD_LAYOUT") and not is_secret_name("monkey")
    assert not is_secret_name("PWD") and not is_secret_name("ON_ERROR_STOP")


def test_the_commands_rollbot_builds_are_shown_without_the_password() -> None:
    db = DatabaseConfig(name="azora_prod", psql=f"env PGPASSWORD='{PW}' psql -U postgres",
                        pg_dump=f"env PGPASSWORD={PW} pg_dump -U postgres",
                        backups_dir="/backups", backup_glob="azora_prod_*.sql.gz")
    built = [cmd.restore_from(db, "/backups/a.sql.gz"), cmd.safety_backup(db, "/backups/s.gz"),
             cmd.drop_database(db), cmd.row_counts(db), cmd.migrations_head(db)]
    assert all(PW in c for c in built)  # the host gets the real command
    for c in built:
        assert PW not in redact(c)
        assert "PGPASSWORD=***" in redact(c)


def test_error_texts_are_redacted_when_made() -> None:
    err = CommandFailed(f"`env PGPASSWORD={PW} psql` on h exited with status 2", exit_status=2,
                        output_tail=f"could not connect to postgresql://u:{PW}@db/x")
    assert PW not in str(err) and PW not in err.output_tail
    assert "PGPASSWORD=***" in str(err)
    assert PW not in str(HostError(f"psql postgresql://u:{PW}@db/x failed"))


def test_log_records_hide_secrets_in_args_and_tracebacks() -> None:
    logger = logging.getLogger("tests.redaction")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("running %s", f"env PGPASSWORD={PW} psql")
        try:
            raise RuntimeError(f"psql postgresql://u:{PW}@db/x")
        except RuntimeError:
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
    formatter = logging.Formatter("%(message)s")
    text = "\n".join(formatter.format(r) for r in records)
    assert PW not in text
    assert "PGPASSWORD=***" in text and "postgresql://u:***@db/x" in text
    assert "Traceback" in text


def test_installed_redaction_covers_handlers_added_later(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("asyncssh").info("  Command: %s", f"env PGPASSWORD={PW} psql")
    assert PW not in caplog.text
    assert f"PGPASSWORD={MASK}" in caplog.text
