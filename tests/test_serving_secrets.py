"""A password in a state URL is never printed (errors, the `serve state` table and prompt show `***`), `serve
state` says it needs a workspace, and `replay --http host:port` means http://host:port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError, shown_url
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.redis_store import RedisStore
from payfm.fm.online_state import RedisState
from payfm.serving.errors import InvalidInput
from payfm.serving.namespaces import list_namespaces
from services import REDIS_SCRATCH_URL

NOWHERE = "redis://app:secret@127.0.0.1:1/0"  # nothing listens on port 1: refused at once


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "redis://app:secret@10.0.0.5:6380/2?socket_timeout=5",
            "redis://app:***@10.0.0.5:6380/2?socket_timeout=5",
        ),
        ("rediss://:secret@cache.internal/0", "rediss://:***@cache.internal/0"),
        ("redis://app:se%40cr%3Aet@[::1]:6379/0#x", "redis://app:***@[::1]:6379/0#x"),
        ("unix://:secret@/run/redis.sock?db=3", "unix://:***@/run/redis.sock?db=3"),
        ("unix:///run/redis.sock?password=secret&db=3", "unix:///run/redis.sock?password=***&db=3"),
        ("redis://app@127.0.0.1:6379/0", "redis://app@127.0.0.1:6379/0"),  # a user alone is no secret
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("memory", "memory"),
    ],
)
def test_shown_url_masks_the_password_and_only_it(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_an_unreachable_redis_is_named_without_its_password() -> None:
    for open_state in (
        lambda: RedisStore(NOWHERE, tiny_set()),
        lambda: RedisState(NOWHERE, "0123456789abcdef", keep=3, n_fields=4),
        lambda: list_namespaces(NOWHERE),
    ):
        with pytest.raises(ConfigError, match="not reachable") as e:
            open_state()
        assert "secret" not in str(e.value) and "redis://app:***@127.0.0.1:1/0" in str(e.value)


def test_serve_state_list_and_drop_show_the_url_without_its_password(
    tmp_path: Path, redis_scratch: Any
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    redis_scratch.set("payfm:0123abcd.f3:e:card:fp_1", b"1|{}")
    assert REDIS_SCRATCH_URL.startswith("redis://") and "@" not in REDIS_SCRATCH_URL
    # Redis without requirepass accepts any password of the default user: the URL below connects.
    url = REDIS_SCRATCH_URL.replace("redis://", "redis://:secret@", 1)
    runner = CliRunner()
    base = ["-w", str(ws.root), "serve", "state"]

    listed = runner.invoke(cli, [*base, "list", "--state", url])
    assert listed.exit_code == 0, listed.output
    assert "payfm:0123abcd.f3" in listed.output and "secret" not in listed.output
    assert shown_url(url) in listed.output  # the table's title

    asked = runner.invoke(cli, [*base, "drop", "payfm:0123abcd.f3", "--state", url], input="n\n")
    assert asked.exit_code == 1 and "Delete every key of payfm:0123abcd.f3 in" in asked.output
    assert "secret" not in asked.output and shown_url(url) in asked.output
    assert redis_scratch.exists("payfm:0123abcd.f3:e:card:fp_1")  # not confirmed: not dropped

    down = runner.invoke(cli, [*base, "list", "--state", NOWHERE])
    assert down.exit_code == 1 and "not reachable" in down.output and "secret" not in down.output


def test_serve_state_without_a_workspace_says_it_needs_one(tmp_path: Path) -> None:
    for args in (["list"], ["drop", "payfm:0123abcd.f3", "--yes"]):
        r = CliRunner().invoke(
            cli, ["-w", str(tmp_path / "none"), "serve", "state", *args, "--state", NOWHERE]
        )
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert f"serve state {args[0]} reads the workspace's registry" in r.output
        assert "-w/--workspace (or PAYFM_WORKSPACE)" in r.output and "No payfm workspace" in r.output


def test_a_state_that_is_neither_memory_nor_redis_names_every_accepted_scheme(tmp_path: Path) -> None:
    from payfm.serving.scorer import Scorer

    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(InvalidInput, match=r"'memory' or a redis://, rediss:// or unix:// URL"):
        Scorer.open(ws, state="valkey://127.0.0.1:6379/0")


def test_a_replay_to_host_and_port_without_a_scheme_goes_to_http(tmp_path: Path) -> None:
    from payfm.serving.replay import replay_http

    gets: list[str] = []

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    ws = Workspace.open(tmp_path / "ws", create=True)  # no events: the replay only asks /healthz
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        replay_http(ws, None, None, f"127.0.0.1:{server.server_address[1]}", None)
    finally:
        server.shutdown()
        server.server_close()
    assert gets == ["/healthz"]
