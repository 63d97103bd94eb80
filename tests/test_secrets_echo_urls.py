"""A password in a Redis or PostgreSQL URL (or a libpq keyword DSN) is never printed: not when written
unencoded with '#', '?' or '/' in it, not in a driver's message quoting a piece of it, not in /healthz or the
service's log; the URLs can come from PAYFM_STATE and PAYFM_DECISION_LOG instead of the command line (where
/proc/<pid>/cmdline shows them); an unknown Redis URL option is a one-line error, not a traceback."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError, scrubbed, shown_url, url_secrets
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.redis_store import RedisStore
from payfm.fm.online_state import RedisState
from payfm.serving.decision_log import open_log
from payfm.serving.errors import InvalidInput
from payfm.serving.namespaces import list_namespaces
from services import POSTGRES_URL, require_postgres, require_redis

SECRET = "S3cretPW"
# The brief's database for these tests: emptied before and after each test that writes to it.
REDIS_URL = os.environ.get("PAYFM_TEST_REDIS_SECRETS_URL", "redis://127.0.0.1:6379/12")


def with_password(url: str, password: str = SECRET, user: str = "") -> str:
    """``url`` (scheme://host...) with ``user:password@`` before its host."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections and that no other process can take meanwhile: bound, never
    listening (a port closed after bind(0) may be given to another test process's server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:S3cret#PW@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("redis://u:S3cret?PW@127.0.0.1:1/0", "redis://u:***@127.0.0.1:1/0"),
        ("postgresql://u:S3cret?PW@host/db", "postgresql://u:***@host/db"),
        (
            "postgresql://u:S3/cr#et?P@W@host:5432/db?sslmode=require",
            "postgresql://u:***@host:5432/db?sslmode=require",
        ),
        ("redis://u:S3cret PW@h/0", "redis://u:***@h/0"),
        ("redis://127.0.0.1:6379/0?password=S3cret#PW&db=2", "redis://127.0.0.1:6379/0?password=***&db=2"),
        ("redis://127.0.0.1:6379/0?PASSWORD=S3cretPW", "redis://127.0.0.1:6379/0?PASSWORD=***"),
        ("host=127.0.0.1 password=S3cretPW dbname=test", "host=127.0.0.1 password=*** dbname=test"),
        ("host=h password = S3cretPW dbname=test", "host=h password = *** dbname=test"),
        ("host=h password='S3cret PW' dbname=test", "host=h password=*** dbname=test"),
        ("host=h password='S3\\'cret PW' port=1", "host=h password=*** port=1"),
        ("host=h PASSWORD=S3cretPW", "host=h PASSWORD=***"),
        ("host=h user=app dbname=test", "host=h user=app dbname=test"),
        ("redis://app@127.0.0.1:6379/0", "redis://app@127.0.0.1:6379/0"),
        ("sqlite", "sqlite"),
    ],
)
def test_shown_url_masks_a_password_the_url_parser_would_cut_short(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "S3" not in shown and "PW" not in shown.replace("PASSWORD", "")


def test_a_driver_message_quoting_a_piece_of_the_password_is_scrubbed() -> None:
    url = "redis://u:S3cret#PW@127.0.0.1:1/0"
    assert url_secrets(url) == ["S3cret#PW", "S3cret", "PW"]
    said = "Port could not be cast to integer value as 'S3cret'"
    assert scrubbed(said, url) == "Port could not be cast to integer value as '***'"
    assert scrubbed("at redis://u:S3cret#PW@h:1/0 (PW)", url) == "at redis://u:***@h:1/0 (***)"
    # a short piece only where it stands alone: 'PW' in a word is no password
    assert scrubbed("PWD unset", url) == "PWD unset"
    dsn = "host=h password='a\\'b S3cret' dbname=d"
    assert "a'b S3cret" in url_secrets(dsn)
    assert scrubbed("bad password a'b S3cret", dsn) == "bad password ***"
    assert scrubbed("x%23y S3cret#PW", "redis://u:S3cret%23PW@h/0") == "x%23y ***"  # decoded too


# Every opener of a Redis state (the features', a foundation model embedder's, the namespaces' listing).
OPEN_STATES = [
    lambda url: RedisStore(url, tiny_set()),
    lambda url: RedisState(url, "0123456789abcdef", keep=3, n_fields=4),
    lambda url: list_namespaces(url),
]


@pytest.mark.parametrize("open_state", OPEN_STATES)
def test_every_redis_state_names_its_url_and_the_drivers_text_without_the_password(open_state: Any) -> None:
    with pytest.raises(ConfigError) as e:
        open_state("redis://u:S3cret#PW@127.0.0.1:6379/12")
    said = str(e.value)
    assert "S3cret" not in said and "redis://u:***@127.0.0.1:6379/12" in said
    assert "cast to integer value as '***'" in said  # redis-py's text, kept but scrubbed


def test_a_password_with_a_slash_read_as_the_database_path_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as e:
        RedisStore("redis://u:S3cret/PW@127.0.0.1:6379/12", tiny_set())
    said = str(e.value)
    assert "database number" in said and "S3cret" not in said and "PW" not in said, said


@pytest.mark.parametrize("open_state", OPEN_STATES)
def test_an_unknown_redis_url_option_is_a_config_error_naming_it(open_state: Any) -> None:
    url = f"{REDIS_URL}?PASSWORD={SECRET}"
    with pytest.raises(ConfigError) as e:
        open_state(url)
    said = str(e.value)
    assert "\n" not in said and SECRET not in said
    assert "?PASSWORD=***" in said and "expected query arguments redis-py takes, in lower case" in said
    assert said.endswith("Got 'PASSWORD'.")


def test_an_unknown_redis_url_option_at_the_cli_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    url = f"{REDIS_URL}?socket_timout=2"
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "state", "list", "--state", url])
    assert r.exit_code == 1 and "Traceback" not in r.output and r.exception is not None
    assert isinstance(r.exception, SystemExit)
    assert r.output.count("\n") == 1 and "Got 'socket_timout'." in r.output, r.output


def test_a_keyword_dsn_given_as_the_decision_log_is_refused_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        open_log(f"host=127.0.0.1 password={SECRET} dbname=test", tmp_path)
    assert SECRET not in str(e.value) and "password=***" in str(e.value)
    ws = Workspace.open(tmp_path / "ws", create=True)
    for args, env in (
        (["--decision-log", f"host=127.0.0.1 password='{SECRET}' dbname=test"], {}),
        ([], {"PAYFM_DECISION_LOG": f"host=127.0.0.1 password={SECRET} dbname=test"}),
    ):
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "export", *args], env=env)
        assert r.exit_code == 1 and SECRET not in r.output and "password=***" in r.output, r.output


def test_a_postgresql_url_with_a_hash_or_question_mark_in_its_password_is_masked() -> None:
    with refusing_port() as port:
        for password in ("S3cret#PW", "S3cret?PW", "S3/cret@PW"):
            with pytest.raises(ConfigError) as e:
                open_log(f"postgresql://app:{password}@127.0.0.1:{port}/x", Path("."))
            assert "S3" not in str(e.value) and f"postgresql://app:***@127.0.0.1:{port}/x" in str(e.value)


def test_the_decision_log_url_comes_from_payfm_decision_log(tmp_path: Path) -> None:
    """A database that does not exist: the message names the env var's URL (so it was read), masked."""
    require_postgres()
    ws = Workspace.open(tmp_path / "ws", create=True)
    url = with_password(POSTGRES_URL.rpartition("/")[0] + "/payfm_no_such_database", user="postgres")
    url = url.replace("//postgres:S3cretPW@postgres@", "//postgres:S3cretPW@")  # (a user in POSTGRES_URL)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "export"], env={"PAYFM_DECISION_LOG": url})
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert SECRET not in r.output and "payfm_no_such_database" in r.output and ":***@" in r.output


def test_the_state_url_comes_from_payfm_state(tmp_path: Path) -> None:
    client = require_redis(REDIS_URL)
    client.flushdb()
    try:
        client.set("payfm:0123abcd.f3:e:card:fp_1", b"1|{}")
        ws = Workspace.open(tmp_path / "ws", create=True)
        url = with_password(REDIS_URL)  # Redis without requirepass takes any password of the default user
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "state", "list"], env={"PAYFM_STATE": url})
        assert r.exit_code == 0, r.output
        assert "payfm:0123abcd.f3" in r.output and SECRET not in r.output and shown_url(url) in r.output
        # (not the workspace's SQLite log: `serve` would hold the workspace's lock file open in this process)
        env = {"PAYFM_STATE": "valkey://u:S3cretPW@h/0", "PAYFM_DECISION_LOG": "postgresql://127.0.0.1:1/x"}
        bad = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--port", str(closed_port())], env=env)
        assert bad.exit_code == 1 and SECRET not in bad.output and "'valkey://u:***@h/0'" in bad.output
    finally:
        client.flushdb()


COMMANDS = [
    (["serve"], {"state": "PAYFM_STATE", "decision_log": "PAYFM_DECISION_LOG"}),
    (["serve", "state", "list"], {"url": "PAYFM_STATE"}),
    (["serve", "state", "drop"], {"url": "PAYFM_STATE"}),
    (["serve", "export"], {"spec": "PAYFM_DECISION_LOG"}),
    (["fm", "parity"], {"state": "PAYFM_STATE"}),
]


@pytest.mark.parametrize(("path", "envvars"), COMMANDS)
def test_every_command_taking_a_state_or_decision_log_reads_it_from_the_environment_and_says_so(
    path: list[str], envvars: dict[str, str]
) -> None:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    params = {p.name: p for p in command.params}
    for param, var in envvars.items():
        assert params[param].envvar == var
    helped = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert helped.exit_code == 0 and all(var in helped.output for var in envvars.values()), helped.output


def test_the_serving_doc_names_the_environment_variables() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    assert "PAYFM_STATE" in doc and "PAYFM_DECISION_LOG" in doc


def test_healthz_and_the_log_scrub_the_passwords_of_the_backends_urls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver's message holding the password (as redis-py's 'cast to integer value as ...' did) is shown
    by /healthz and logged on a backend's failure: both without it."""
    import psycopg
    import redis
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.postgres_log import PostgresDecisionLog
    from payfm.serving.scorer import Scorer
    from test_serving_scorer import charge, register

    require_postgres()
    client = require_redis(REDIS_URL)
    client.flushdb()
    ws = Workspace.open(tmp_path / "ws", create=True)
    register(ws, 1.0, "production")
    schema = f"secrets_{uuid.uuid4().hex[:10]}"
    log_url = POSTGRES_URL.replace("://postgres@", f"://postgres:{SECRET}@", 1)  # trust: the password unused
    assert SECRET in log_url
    scorer = Scorer.open(
        ws,
        decision_log=PostgresDecisionLog(log_url, schema=schema),
        state=with_password(REDIS_URL, "Red1sPW!"),
    )
    try:

        def log_fails(charge_id: str) -> None:
            raise psycopg.OperationalError(f"could not use password {SECRET}")

        def state_fails() -> bool:
            raise redis.ConnectionError("AUTH Red1sPW! refused")

        async def score_fails(charge: dict[str, Any]) -> None:
            raise redis.ConnectionError("AUTH Red1sPW! refused")

        monkeypatch.setattr(scorer.log, "get_decision", log_fails)
        monkeypatch.setattr(scorer.online.store, "is_loaded", state_fails)
        monkeypatch.setattr(scorer, "score_async", score_fails)
        with TestClient(create_app(scorer, None)) as http, caplog.at_level(logging.ERROR):
            health = http.get("/healthz")
            scored = http.post("/v1/charges/score", json=charge(1))
        assert health.status_code == 503 and scored.status_code == 503
        problems = health.json()["problems"]
        assert problems == [
            "the decision log does not answer (OperationalError: could not use password ***)",
            "the online state does not answer (ConnectionError: AUTH *** refused)",
        ]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "AUTH *** refused" in logged and "Red1sPW" not in logged and SECRET not in logged
    finally:
        monkeypatch.undo()
        scorer.close(snapshot=False)
        client.flushdb()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_replay_to_an_http_url_with_a_password_never_prints_it(tmp_path: Path) -> None:
    from payfm.serving.replay import Aborted, replay_http

    ws = Workspace.open(tmp_path / "ws", create=True)
    with refusing_port() as port, pytest.raises(Aborted) as e:
        replay_http(ws, None, None, f"http://u:{SECRET}@127.0.0.1:{port}", None)
    assert SECRET not in str(
        e.value
    ) and f"No decision service answered at http://u:***@127.0.0.1:{port}" in str(e.value)
    with pytest.raises(ConfigError) as cut:  # an unencoded '#': the parser read 'S3cret' as the port
        replay_http(ws, None, None, f"http://u:S3cret#PW@127.0.0.1:{port}", None)
    assert "S3cret" not in str(cut.value) and "numeric port" in str(cut.value)
