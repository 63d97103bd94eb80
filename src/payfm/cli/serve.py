"""``payfm serve`` (the decision service), ``payfm serve keys`` and ``payfm replay``: thin commands."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

import click

from payfm import interrupts
from payfm.cli.options import FiniteFloatRange
from payfm.cli.render import plural
from payfm.cli.serve_log import decision_log_option, opened_log, prune_cmd
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace

if TYPE_CHECKING:
    from payfm.registry import Registry
    from payfm.serving.replay import ReplayReport


def _ws(ctx: click.Context) -> Workspace:
    return Workspace.open(ctx.obj["workspace"])


def _keystore(ctx: click.Context):  # type: ignore[no-untyped-def]
    from payfm.serving.keys import KeyStore

    return KeyStore(_ws(ctx).root / "serving" / "keys.db")


@click.group(invoke_without_command=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address or host name to bind (an IPv6 one as ::1 or [::1]; 0.0.0.0: every interface; never empty).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind; 0: a free one the system picks, said in the start line ('... on http://HOST:PORT').",
)
@click.option(
    "--decision-log",
    envvar="PAYFM_DECISION_LOG",
    default="sqlite",
    show_default=True,
    help="sqlite (in the workspace) or postgresql://... (or PAYFM_DECISION_LOG: a password in the URL stays "
    "off the command line).",
)
@click.option(
    "--state",
    envvar="PAYFM_STATE",
    default="memory",
    show_default=True,
    help="Online state (features and foundation-model embedders): memory, or redis://... shared by several "
    "processes (or PAYFM_STATE: a password in the URL stays off the command line).",
)
@click.option(
    "--model",
    default=None,
    help="Registry name the production model must have: the server refuses to start, and a reload fails "
    "(the server deciding on), when the production version is of another (default: the production "
    "model, whatever its name).",
)
@click.option(
    "--max-in-flight",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests in flight before 503.",
)
@click.option(
    "--max-lag-ms",
    default=50.0,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Event-loop queueing delay (ms) beyond which requests get 503 (load shedding).",
)
@click.option(
    "--max-body",
    default=64 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest request body (bytes; at least 1024, a charge's size).",
)
@click.option(
    "--body-timeout-s",
    default=10.0,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Seconds a request's body may take to arrive (then 408); until it has, the request holds no place "
    "of --max-in-flight.",
)
@click.option(
    "--snapshot-every",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Snapshot the memory state every N decisions.",
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "os"]),
    default="fsync",
    show_default=True,
    help="When a decision is acknowledged: fsync (on disk; survives a power cut) or os (written to the "
    "operating system; survives a kill -9 of the server, not a power cut).",
)
@click.option(
    "--max-future-s",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=0),
    help="Refuse a charge or outcome whose 'created' is more than this many seconds ahead of the server's "
    "clock (clock skew): one far-future event would reset its card's, IP's and merchant's velocity windows.",
)
@click.option(
    "--max-past-s",
    default=None,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Refuse a charge whose 'created' is more than this many seconds behind the server's clock: a "
    "back-dated charge gives its card a history it never had (card.since_first, the _all counts). Off by "
    "default, so history can be replayed through the service; in production, e.g. 3600. Outcomes are not "
    "bound (an issuer dates a dispute when it opens it; reports bring it later).",
)
@click.option(
    "--keep-alive-s",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds an idle HTTP connection is kept open for the next request (uvicorn's timeout_keep_alive). "
    "Behind a load balancer, set it above the balancer's own idle timeout (AWS ALB: 60 s), or the balancer "
    "reuses connections the server just closed: intermittent 502s.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log a line per request (logger payfm.access: client, API key name, method, path, status, ms, "
    "bytes; never a body). Metrics are at /metrics either way.",
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Follow the workspace: within a second of `rules apply|activate|rollback` or `models "
    "promote|rollback`, serve the new ruleset or model (every server sharing the workspace does, each on "
    "its own). --no-follow: only POST /v1/admin/reload changes them. Lists are followed either way.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    decision_log: str,
    state: str,
    model: str | None,
    max_in_flight: int,
    max_lag_ms: float,
    max_body: int,
    body_timeout_s: float,
    snapshot_every: int,
    durability: str,
    max_future_s: float,
    max_past_s: float | None,
    keep_alive_s: int,
    access_log: bool,
    follow: bool,
) -> None:
    """Run the real-time decision service (see docs/serving.md).

    Clients send a key made by `payfm serve keys create NAME` as 'Authorization: Bearer <key>'; the
    OpenAPI document is at /openapi.json, the health check at /healthz and Prometheus metrics at /metrics
    (no key).

    \b
    Example (a world with a production model: `make demo`):
      payfm serve keys create checkout          # prints the key once
      payfm serve --port 8000 &
      curl -s localhost:8000/healthz
      curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
        localhost:8000/v1/charges/score -d @charge.json
      # charge.json: the body of docs/serving.md's first request (ch_1, section "API"), saved
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from payfm.errors import shown_url
    from payfm.serving.app import create_app
    from payfm.serving.bundle import no_model_warning, served_line
    from payfm.serving.scorer import Scorer, ScorerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host = _host(host)
    ws = _ws(ctx)
    _port_free(host, port)  # before minutes of loading, not after (port 0: the host is checked)
    if decision_log.startswith("sqlite") or state == "memory":
        # The workspace's SQLite decision log and in-memory state snapshots belong to one server.
        _hold_workspace(ws)
    scorer = Scorer.open(
        ws,
        decision_log=decision_log,
        state=state,
        config=ScorerConfig(
            model=model,
            snapshot_every=snapshot_every,
            max_future_s=max_future_s,
            max_past_s=max_past_s,
            lists_refresh_s=1.0,
            follow=follow,
        ),
        durability=durability,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the previous handler: make
    # that an exit through `finally`, so the scorer closes (the state is snapshotted) instead of dying.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    interrupts.check()  # a SIGTERM while the scorer opened that a library dropped: stop now, not serve
    # The event loop computes decisions while the decision log's writer thread waits on the disk; when a
    # commit returns, the writer needs the GIL to resolve the batch's futures. Python's default switch
    # interval (5 ms) would let it wait that long behind a busy loop on every commit.
    sys.setswitchinterval(0.0005)
    try:
        app = create_app(
            scorer,
            _keystore(ctx),
            max_in_flight=max_in_flight,
            max_body=max_body,
            max_lag_ms=max_lag_ms,
            access_log=access_log,
            body_timeout_s=body_timeout_s,
        )
        with _bound(host, port) as sock:  # (uvicorn listens on it: port 0 is the one the system gave)
            served = scorer.bundle.describe()
            _say(f"serving {served_line(served)} on {_url(host, sock.getsockname()[1])}")
            for warning in [*served.get("warnings", []), *filter(None, [no_model_warning(ws)])]:
                _say(f"warning: {warning}")
            config = uvicorn.Config(
                app,
                host=host,
                port=sock.getsockname()[1],
                log_level="warning",
                access_log=False,
                timeout_keep_alive=keep_alive_s,
            )
            server = uvicorn.Server(config)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has stopped: a clean stop
                pass
            else:
                if not server.started:  # (its startup failed, said in its log; uvicorn.run's status)
                    raise SystemExit(3)
    finally:
        # Only a memory state is snapshotted: a Redis state is already where the next server reads it.
        final = "final state snapshot" if state == "memory" else f"state left in Redis ({shown_url(state)})"
        _say(f"stopping ({final}, decision log closed)")  # (said first: a snapshot may take a while)
        t0 = time.perf_counter()
        scorer.close()
        if left := scorer.log.unwritten:  # a log whose writer did not finish in time was not closed whole
            _say(
                f"error: the decision log did not commit within {scorer.log.close_timeout_s:g} s: its "
                f"writer was abandoned, {left:,} record(s) unwritten"
            )
        _say(f"stopped in {time.perf_counter() - t0:.1f} s")


def _say(line: str) -> None:
    """A start or stop line on stderr, dated as the service's log lines are (local time)."""
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} payfm serve: {line}", err=True)


def _host(host: str) -> str:
    """The address ``--host`` names (``[::1]``, as a URL writes it, is ``::1``); a one-line error for an empty
    one, which would bind every interface (an unset ``$HOST`` gives it): that takes ``0.0.0.0`` on purpose."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host.strip():
        raise ConfigError(
            "--host: expected an address or a host name to listen on (127.0.0.1: this machine only; "
            f"0.0.0.0: every interface, on purpose). Got {host!r} (an unset variable such as $HOST?)."
        )
    return host


def _url(host: str, port: int) -> str:
    """The service's URL as the start line says it (an IPv6 address in brackets, its zone's '%' encoded).

    >>> _url("127.0.0.1", 8000), _url("::1", 8000), _url("fe80::1%eth0", 80)
    ('http://127.0.0.1:8000', 'http://[::1]:8000', 'http://[fe80::1%25eth0]:80')
    """
    return f"http://[{host.replace('%', '%25')}]:{port}" if ":" in host else f"http://{host}:{port}"


def _port_free(host: str, port: int) -> None:
    _bound(host, port).close()


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: a free port), as uvicorn binds its own (``SO_REUSEADDR``: a
    restart finds the port free while the last run's connections time out); ConfigError when it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in host:  # (IPv6 only, as asyncio binds it: `--host ::` is not IPv4's too)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}).") from None
    return sock


_HELD: list[object] = []  # the open lock file of this process's server (kept open while it runs)


def _hold_workspace(ws: Workspace) -> None:
    """Take the workspace's serving lock (released when the process ends), or refuse: two servers on one
    SQLite decision log or one memory state's snapshots would interleave their sequence numbers."""
    import fcntl
    import os

    path = ws.root / "serving" / "serve.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115  # held open for the life of the server
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise ConfigError(
            f"Another payfm serve ({who}) serves workspace '{ws.root}' with its SQLite decision log or "
            "memory state. Stop it, or run several servers with --state redis://... "
            "--decision-log postgresql://..."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _HELD.append(f)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@serve.group()
def keys() -> None:
    """API keys of the service (stored as salted hashes)."""


@keys.command("create")
@click.argument("name")
@click.pass_context
def keys_create(ctx: click.Context, name: str) -> None:
    """Create a key for NAME (letters, digits, '-' or '_'; it is recorded as the reviewer of the reviews the
    key closes); the key is printed once and never stored in clear. Clients send it as 'Authorization:
    Bearer <key>'.

    \b
    Example:
      payfm serve keys create checkout
    """
    click.echo(_keystore(ctx).create(name))


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key: name, id, creation time, active or revoked (never the key itself)."""
    from payfm.events.cards import redact_card_numbers

    for k in _keystore(ctx).list():
        status = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
        # A name created before names were checked may hold a card number: never printed.
        name = redact_card_numbers(k["name"])
        click.echo(f"{name}\t{k['id']}\tcreated {k['created_at']}\t{status}")


@keys.command("revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke the key NAME: requests with it get 401 from then on."""
    from payfm.events.cards import redact_card_numbers

    _keystore(ctx).revoke(name)
    click.echo(f"revoked {redact_card_numbers(name)}")


@serve.group("state")
def state_group() -> None:
    """The online state's namespaces in Redis (one per feature-set version and per foundation-model
    checkpoint; nothing expires them): list them with the models and servers that use them, drop the ones
    nothing serves from. Both read the workspace's registry (-w/--workspace, or PAYFM_WORKSPACE) to name the
    models that use each namespace.

    \b
    payfm -w WORKSPACE serve state list --state redis://127.0.0.1:6379/0
    payfm -w WORKSPACE serve state drop payfm:fm:0123456789abcdef --state redis://127.0.0.1:6379/0
    """


def _registry(ctx: click.Context, command: str) -> Registry:
    """The workspace's registry, or a one-line error saying why `serve state` needs a workspace."""
    from payfm.errors import WorkspaceError
    from payfm.registry import Registry

    try:
        return Registry(_ws(ctx))
    except WorkspaceError as e:
        raise ConfigError(
            f"payfm serve state {command} reads the workspace's registry to name the models that use each "
            f"namespace: give -w/--workspace (or PAYFM_WORKSPACE) before `serve`. {e}"
        ) from None


REDIS_URL = click.option(
    "--state",
    "url",
    envvar="PAYFM_STATE",
    required=True,
    metavar="redis://...",
    help="The Redis of the servers' --state (or PAYFM_STATE).",
)


@state_group.command("list")
@REDIS_URL
@click.pass_context
def state_list(ctx: click.Context, url: str) -> None:
    """Namespaces, largest first: keys, memory (estimated from a sample of keys), the registered versions
    whose state each holds and how many serving processes read it now (`drop` names them)."""
    from rich.table import Table
    from rich.text import Text

    from payfm.cli.render import console
    from payfm.errors import shown_url
    from payfm.serving.namespaces import list_namespaces
    from payfm.serving.shared_state import Owner, loaded_from

    registry = _registry(ctx, "list")
    found = list_namespaces(url, registry)
    table = Table(title=f"Online state in {shown_url(url)}")
    table.add_column("namespace", no_wrap=True)
    table.add_column("kind")
    table.add_column("keys", justify="right")
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("used by (registered)")
    table.add_column("servers", justify="right")
    for ns in found:
        used = Text(", ".join(ns.used_by)) if ns.used_by else Text("none", style="dim")
        size = f"{ns.bytes / 1e6:,.1f} MB" if ns.bytes >= 100_000 else f"{ns.bytes / 1e3:.1f} kB"
        kind = "fm" if ns.kind == "foundation model" else ns.kind  # narrow: the table fits 80 columns
        table.add_row(ns.name, kind, f"{ns.keys:,}", size, used, str(len(ns.servers)))
    console.print(table if found else f"No payfm namespace in {shown_url(url)}.")
    mine = Owner.of(registry.ws)
    for ns in found:  # whose event log each state holds: a server of another log refuses it
        owner = Owner.parse(ns.marker) if ns.marker is not None else None
        this = (
            "" if owner is None else " (this workspace's log)" if owner.same_log(mine) else " (another log)"
        )
        click.echo(f"{ns.name}: loaded from {loaded_from(ns.marker)}{this}")


@state_group.command("drop")
@click.argument("namespace")
@REDIS_URL
@click.option(
    "--force", is_flag=True, help="Drop it even if a production or shadow model or a running server uses it."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def state_drop(ctx: click.Context, namespace: str, url: str, force: bool, yes: bool) -> None:
    """Delete every key of NAMESPACE (refused for one a production or shadow model uses or a running
    server reads, unless --force)."""
    from payfm.errors import shown_url
    from payfm.serving.namespaces import check_drop, drop_namespace

    registry = _registry(ctx, "drop")  # before the question: a missing workspace fails without asking
    if not yes:
        check_drop(url, namespace, registry, force=force)  # and so does a drop that would be refused
        click.confirm(f"Delete every key of {namespace} in {shown_url(url)}?", abort=True)
    n = drop_namespace(url, namespace, registry, force=force)
    click.echo(f"Dropped {namespace}: {n:,} keys.")


@serve.command("export")
@decision_log_option
@click.option(
    "--assume-authorized",
    is_flag=True,
    help="Take a charge the service let through without the processor's outcome as authorized (else it is "
    "left out and counted); not one it sent to 3-D Secure (request_3ds), which went to no authorization.",
)
@click.pass_context
def export_cmd(ctx: click.Context, spec: str, assume_authorized: bool) -> None:
    """Append the charges the service decided to the workspace's event log, so their disputes, early fraud
    warnings and review closures become training labels (labels join outcomes to the event log's charges).

    Each charge is appended once (ones the event log holds are skipped: run it as often as you like), with
    the processor's outcome the request carried or that was reported afterwards (POST
    /v1/charges/{id}/authorization), or `blocked` for a charge the service blocked. A charge let through
    without the processor's outcome is left out and counted unless --assume-authorized (a declined charge
    taken as authorized would be a false genuine label; a charge sent to 3-D Secure stays left out: the
    attempt after the challenge is a charge of its own). It may run while servers do.

    \b
    payfm -w WORKSPACE serve export
    payfm -w WORKSPACE serve export --decision-log postgresql://... --assume-authorized
    payfm -w WORKSPACE train --horizon-days 60            # the exported charges' labels now count
    """
    from payfm.cli.render import console
    from payfm.errors import shown_url
    from payfm.serving.export import export_charges

    ws = _ws(ctx)
    with opened_log(ws, spec) as log:
        summary = export_charges(ws, log, assume_authorized=assume_authorized)
    if summary.decided == 0:
        console.print(
            f"The decision log {shown_url(spec)} holds no decisions: is it the one the servers write "
            "(their --decision-log)?",
            markup=False,
        )
    by = ", ".join(f"{n:,} {o}" for o, n in summary.outcomes.items()) or "none"
    console.print(
        f"{summary.decided:,} decided charges: {summary.exported:,} appended to the event log ({by}), "
        f"{summary.already:,} there already.",
        markup=False,
    )
    if summary.refused:
        first = next(iter(summary.refused.items()))
        console.print(
            f"{len(summary.refused):,} refused by the event log's validation (left in the decision log), "
            f"e.g. charge {first[0]!r}: {first[1]}",
            markup=False,
        )
    if summary.proven:
        console.print(
            f"{summary.proven:,} of them without a reported result, as authorized: a refund, dispute or "
            "early fraud warning of each is logged (those follow a successful charge only).",
            markup=False,
        )
    if summary.unknown_outcome:
        console.print(
            f"{summary.unknown_outcome:,} left out: let through by the service without the processor's "
            "outcome (send `outcome` with the charge, report it to POST /v1/charges/{id}/authorization, or "
            "give --assume-authorized, which takes all but those sent to 3-D Secure).",
            markup=False,
        )


serve.add_command(prune_cmd)


@click.command()
@click.option("--from", "start", required=True, help="First day (or timestamp) to replay, UTC.")
@click.option("--to", "end", default=None, help="End (exclusive), UTC; default: the end of the log.")
@click.option(
    "--http",
    "url",
    default=None,
    metavar="URL",
    help="Send to a running service (http://HOST:PORT; HOST:PORT alone means http://) instead of in process.",
)
@click.option(
    "--key",
    envvar="PAYFM_API_KEY",
    default=None,
    help="API key for --http (or PAYFM_API_KEY). A key on the command line is seen by `ps` and kept in the "
    "shell's history: prefer --key-file or the variable.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A file holding the API key for --http (its first non-blank line), as `payfm review` takes it.",
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "os"]),
    default="os",
    show_default=True,
    help="In process only (ignored with --http): how the replay's scratch decision log commits each "
    "decision. os: to the operating system (fast); fsync: to disk, as `payfm serve` does by default, so "
    "the printed commit latency is the one a production server pays.",
)
@click.option(
    "--authorize-after",
    is_flag=True,
    help="Send each charge as production does, before authorization (without its outcome), then its "
    "logged outcome as the processor's answer (POST /v1/charges/{id}/authorization); not for a charge the "
    "service blocks.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    start: str,
    end: str | None,
    url: str | None,
    key: str | None,
    key_file: str | None,
    durability: str,
    authorize_after: bool,
) -> None:
    """Stream historical charges and outcomes through the scorer; print latency and the decision mix.

    \b
    payfm -w WORKSPACE replay --from 2026-04-29                       # in process, charges with outcomes
    payfm -w WORKSPACE replay --from 2026-04-29 --authorize-after     # outcomes reported after decisions
    payfm -w WORKSPACE replay --from 2026-04-29 --http localhost:8000 --key-file replay.key
    """
    from payfm.cli.render import console, iso_time, stage_progress
    from payfm.serving.bundle import no_model_warning
    from payfm.serving.replay import replay_http, replay_in_process

    if key_file is not None:
        if url is None:
            raise ConfigError("--key-file is the API key of --http: give --http URL too.")
        if ctx.get_parameter_source("key") is click.core.ParameterSource.COMMANDLINE:
            raise ConfigError("Give the API key once: --key or --key-file, not both.")
        from payfm.cli.review import api_key

        key = api_key(key_file)
    ws = _ws(ctx)
    s, e = iso_time(start, "--from"), iso_time(end, "--to")
    assert s is not None  # --from is required
    if e is not None and e <= s:
        raise ConfigError(f"--to ({end}) must be after --from ({start}).")
    charges = _refuse_an_empty_window(ws, s, e, start, end)
    if url is not None:  # (an empty one too: refused, not read as "in process")
        from payfm.cli.review import service_url

        url = service_url(url, key, "--http")
    with stage_progress() as update:  # the warm-up (in process), then the window's charges, each a bar

        def replayed(done: int) -> None:  # (called every 1,000 charges decided)
            update(REPLAYING, done, charges)

        if url:
            rep = replay_http(ws, s, e, url, key, progress=replayed, authorize_after=authorize_after)
        else:
            rep = replay_in_process(
                ws,
                s,
                e,
                progress=replayed,
                warm_progress=lambda done, total: update("warming the state", done, total),
                durability=durability,
                authorize_after=authorize_after,
            )
        update(REPLAYING, rep.charges, charges)  # (the last bar: a charge that failed is in rep.errors)
    if url and rep.errors and not rep.mix:  # nothing was decided: a wrong URL or key, a server down
        err, n = rep.errors.most_common(1)[0]
        from payfm.errors import scrubbed, shown_url

        given = "--key-file (no key was given)"
        if key_file is not None:
            given = "--key-file"
        elif ctx.get_parameter_source("key") is click.core.ParameterSource.ENVIRONMENT:
            given = "PAYFM_API_KEY"
        elif key:
            given = "--key"
        raise ConfigError(
            f"Replay to {shown_url(url)}: no request succeeded ({n:,} x {scrubbed(err, url)}); check "
            f"--http and {given}."
        )
    print_replay(rep, f"Replay {start} .. {end or 'end of log'}")
    if not url and (warning := no_model_warning(ws)) is not None:  # (over HTTP the server said it at start)
        console.print(f"warning: {warning}", markup=False, highlight=False)


REPLAYING = "replaying charges"  # the label of the replay's progress bar


def _refuse_an_empty_window(
    ws: Workspace, s: datetime, e: datetime | None, start: str, end: str | None
) -> int:
    """The number of charges in the window (the replay's progress counts to it). A window holding none
    replays nothing: an error giving the log's range (as a backtest does)."""
    con = ws.connect()
    try:
        upto = f" AND created < '{e.isoformat()}'::TIMESTAMPTZ" if e is not None else ""
        [(n, first, last)] = con.execute(
            f"SELECT count_if(created >= '{s.isoformat()}'::TIMESTAMPTZ{upto}), min(created), max(created) "
            "FROM charges"
        ).fetchall()
    finally:
        con.close()
    if not n:
        where = f"run from {first.isoformat()} to {last.isoformat()}" if first is not None else "are none"
        raise ConfigError(
            f"The replay window {start} .. {end or 'end of log'} holds no charges: the event log's charges "
            f"{where}. Choose --from (and --to) within them."
        )
    return int(n)


def ruleset_line(rep: ReplayReport) -> str:
    """Which ruleset versions made the decisions: over HTTP a charge the service decided before is answered
    with its stored decision (idempotent), made by the ruleset active then, so a replay after a rollback
    shows the old version's mix for the charges it decided.

    >>> from collections import Counter
    >>> from payfm.serving.replay import ReplayReport
    >>> ruleset_line(ReplayReport(rulesets=Counter({3: 1146, 2: 494})))
    'Decided by ruleset v2: 494 charges, v3: 1,146 (a charge decided before keeps its stored decision)'
    >>> ruleset_line(ReplayReport(rulesets=Counter({None: 1})))
    'Decided by no ruleset: 1 charge'
    >>> ruleset_line(ReplayReport(rulesets=Counter({None: 12, 1: 3})))
    'Decided by no ruleset: 12 charges, ruleset v1: 3 (a charge decided before keeps its stored decision)'
    """
    order = sorted(rep.rulesets.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0))
    named = [("no ruleset" if v is None else f"v{v}", n) for v, n in order]
    if order[0][0] is not None:  # "ruleset v2: ..., v3: ..."
        named[0] = (f"ruleset {named[0][0]}", named[0][1])
    elif len(named) > 1:  # "no ruleset: ..., ruleset v1: ..."
        named[1] = (f"ruleset {named[1][0]}", named[1][1])
    parts = [f"{what}: {n:,}" for what, n in named]
    parts[0] = f"{named[0][0]}: {plural(named[0][1], 'charge')}"
    if len(parts) == 1:
        return f"Decided by {parts[0]}"
    return f"Decided by {', '.join(parts)} (a charge decided before keeps its stored decision)"


def print_replay(rep: ReplayReport, title: str) -> None:
    """Two tables: server-side latency percentiles and the decision mix (plus errors, if any)."""
    from rich.table import Table
    from rich.text import Text

    from payfm.cli.render import console

    warm = f"; state warmed with {rep.warmed:,} earlier charges in {rep.warm_s:.1f} s" if rep.warmed else ""
    console.print(
        f"{title}: {rep.charges:,} charges and {rep.outcomes:,} outcomes in {rep.wall_s:.1f} s "
        f"({rep.charges / max(rep.wall_s, 1e-9):,.0f} decisions/s, one at a time){warm}"
        + (f"; {rep.authorizations:,} authorization results reported after" if rep.authorizations else "")
    )
    lat = Table(title="Latency (ms)")
    lat.add_column("what")
    rows = []
    if rep.decide_ms:
        rows.append(("decision: features, model, reasons, rules", rep.percentiles(rep.decide_ms)))
        rows.append((f"+ decision log commit (durability {rep.durability})", rep.percentiles()))
    else:
        rows.append(("over HTTP, seen by the client", rep.percentiles()))
    for name in rows[0][1]:
        lat.add_column(name, justify="right")
    for what, pct in rows:
        if pct:
            lat.add_row(what, *(f"{v:.2f}" for v in pct.values()))
    mix = Table(title="Decision mix")
    mix.add_column("outcome")
    mix.add_column("charges", justify="right")
    mix.add_column("share", justify="right")
    total = max(rep.charges, 1)
    for outcome in ("authorized", "request_3ds", "manual_review", "blocked"):
        n = rep.mix.get(outcome, 0)
        mix.add_row(outcome, f"{n:,}", f"{100 * n / total:.1f}%")
    console.print(lat, mix)
    if rep.rulesets:
        console.print(ruleset_line(rep), markup=False, highlight=False)
    if rep.retries:  # (their waits are in the latencies: the client saw them)
        console.print(
            f"Retried {plural(rep.retries, 'time')} after the service shed a request (503 or 429 with "
            f"Retry-After), waiting {rep.retry_wait_s:.1f} s in all",
            markup=False,
            highlight=False,
        )
    if rep.reconnects:
        console.print(
            f"Sent {plural(rep.reconnects, 'request')} again on a new connection: the service had closed an "
            "idle one (its --keep-alive-s)",
            markup=False,
            highlight=False,
        )
    for err, n in rep.errors.most_common(5):
        console.print(Text.assemble(("error", "red"), f" {err}: {n}"))
