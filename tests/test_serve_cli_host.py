"""`payfm serve --host`: an empty value (an unset $HOST) is refused instead of binding every interface, and
the start line gives an IPv6 address as a URL writes it (http://[::1]:PORT), since `--port 0` users read the
port from that line (a review found `--host ''` serving on every interface, no key needed on /healthz and
/metrics, and `--host ::1` saying `on http://::1:43035`)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig, generate_world


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("serve_host") / "ws", create=True)
    w.write_stream(
        generate_world(WorldConfig(charges=1000, days=1, seed=3, start=datetime(2026, 1, 1, tzinfo=UTC)))
    )
    return w


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """uvicorn's run replaced by one that records what it was given and returns at once."""
    seen: dict[str, object] = {}

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        seen["bound"] = [s.getsockname()[:2] for s in sockets]
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr("payfm.cli.serve._hold_workspace", lambda ws: None)  # (a lock held to process exit)
    return seen


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_before_anything_loads(
    host: str, tmp_path: Path, started: dict[str, object]
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--host", host, "--port", "0"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert (
        "--host: expected an address or a host name to listen on (127.0.0.1: this machine only; 0.0.0.0: "
        f"every interface, on purpose). Got {host!r}" in r.output
    )
    assert "bound" not in started and not (ws.root / "serving" / "decisions.db").exists()


def _ipv6() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_host_is_said_in_brackets_in_the_start_line(
    host: str, ws: Workspace, started: dict[str, object]
) -> None:
    if not _ipv6():
        pytest.skip("no IPv6 loopback here")
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--host", host, "--port", "0"])
    assert r.exit_code == 0, r.output
    [(address, port)] = started["bound"]  # type: ignore[misc]
    assert address == "::1" and isinstance(port, int) and port > 0
    assert f" on http://[::1]:{port}\n" in r.output


def test_an_ipv4_host_is_said_as_before(ws: Workspace, started: dict[str, object]) -> None:
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--host", "127.0.0.1", "--port", "0"])
    assert r.exit_code == 0, r.output
    [(address, port)] = started["bound"]  # type: ignore[misc]
    assert address == "127.0.0.1" and f" on http://127.0.0.1:{port}\n" in r.output
