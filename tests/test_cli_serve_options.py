"""`payfm serve` refuses option values that would make it refuse every request or never snapshot, naming
the option and the range (before anything starts)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-in-flight", "0", "x>=1"),  # every request would be 503
        ("--max-body", "0", "x>=1024"),  # every request would be 413
        ("--max-body", "-1", "x>=1024"),
        ("--max-lag-ms", "-1", "x>0"),
        ("--body-timeout-s", "0", "x>0"),  # every request with a body would be 408
        ("--snapshot-every", "0", "x>=1"),
    ],
)
def test_out_of_range_serve_options_are_refused(
    option: str, value: str, expected: str, tmp_path: str
) -> None:
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "serve", option, value])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '{option}': {value}" in result.output and expected in result.output


def test_keep_alive_reaches_uvicorn(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SRE's audit: the idle keep-alive was uvicorn's fixed 5 s, below a load balancer's idle timeout
    (intermittent 502s on reused connections); `--keep-alive-s` sets it."""
    import socket
    from datetime import UTC, datetime
    from pathlib import Path

    import uvicorn

    from payfm.events.workspace import Workspace
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(Path(tmp_path) / "ws", create=True)
    ws.write_stream(
        generate_world(WorldConfig(charges=1000, days=1, seed=1, start=datetime(2026, 1, 1, tzinfo=UTC)))
    )
    seen: dict[str, object] = {}

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        seen.update(keep_alive=server.config.timeout_keep_alive, port=server.config.port)
        seen["body_timeout_s"] = server.config.app.body_timeout_s  # (the Guard: --body-timeout-s)
        seen["bound"] = [s.getsockname()[1] for s in sockets]
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr("payfm.cli.serve._hold_workspace", lambda ws: None)  # (a lock held to process exit)
    args = ["-w", str(ws.root), "serve", "--port", "0", "--keep-alive-s", "75", "--body-timeout-s", "2.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    port = seen["port"]
    assert seen["keep_alive"] == 75 and isinstance(port, int) and port > 0 and seen["bound"] == [port]
    assert seen["body_timeout_s"] == 2.5
    assert f" on http://127.0.0.1:{port}\n" in result.output  # port 0: the one the system gave, said
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--keep-alive-s", "0"])
    assert result.exit_code == 2 and "Invalid value for '--keep-alive-s': 0" in result.output


def test_a_host_that_cannot_be_bound_is_refused_before_loading_even_on_port_0(tmp_path: str) -> None:
    """Found by a review: with --port 0 the host was first bound after the state had loaded (minutes)."""
    from pathlib import Path

    from payfm.events.workspace import Workspace

    ws = Workspace.open(Path(tmp_path) / "ws", create=True)
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "--host", "192.0.2.1", "--port", "0"])
    assert result.exit_code == 1 and "--host 192.0.2.1 --port 0: cannot listen there" in result.output
    assert "stopping" not in result.output and not (ws.root / "serving" / "decisions.db").exists()
