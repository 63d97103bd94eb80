"""``payfm serve`` (the decision service), ``payfm serve keys`` and ``payfm replay``: thin commands."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import click

from payfm.events.workspace import Workspace


def _ws(ctx: click.Context) -> Workspace:
    return Workspace.open(ctx.obj["workspace"])


def _keystore(ctx: click.Context):  # type: ignore[no-untyped-def]
    from payfm.serving.keys import KeyStore

    return KeyStore(_ws(ctx).root / "serving" / "keys.db")


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--decision-log",
    default="sqlite",
    show_default=True,
    help="sqlite (in the workspace) or postgresql://...",
)
@click.option("--state", default="memory", show_default=True, help="Online state: memory or redis://...")
@click.option("--model", default=None, help="Registry name to serve (default: the newest production model).")
@click.option("--max-in-flight", default=64, show_default=True, help="Requests in flight before 503.")
@click.option("--max-body", default=64 * 1024, show_default=True, help="Largest request body (bytes).")
@click.option("--snapshot-every", default=100_000, show_default=True, help="Snapshot the state every n.")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    decision_log: str,
    state: str,
    model: str | None,
    max_in_flight: int,
    max_body: int,
    snapshot_every: int,
) -> None:
    """Run the real-time decision service (see docs/serving.md)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from payfm.serving.app import create_app
    from payfm.serving.scorer import Scorer, ScorerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ws = _ws(ctx)
    scorer = Scorer.open(
        ws,
        decision_log=decision_log,
        state=state,
        config=ScorerConfig(model=model, snapshot_every=snapshot_every),
    )
    click.echo(f"payfm serve: {scorer.bundle.describe()} on http://{host}:{port}", err=True)
    try:
        app = create_app(scorer, _keystore(ctx), max_in_flight=max_in_flight, max_body=max_body)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        scorer.close()


@serve.group()
def keys() -> None:
    """API keys of the service (stored as salted hashes)."""


@keys.command("create")
@click.argument("name")
@click.pass_context
def keys_create(ctx: click.Context, name: str) -> None:
    """Create a key; it is printed once and never stored in clear."""
    click.echo(_keystore(ctx).create(name))


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    for k in _keystore(ctx).list():
        status = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
        click.echo(f"{k['name']}\t{k['id']}\tcreated {k['created_at']}\t{status}")


@keys.command("revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    _keystore(ctx).revoke(name)
    click.echo(f"revoked {name}")


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    d = datetime.fromisoformat(value)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


@click.command()
@click.option("--from", "start", required=True, help="First day (or timestamp) to replay, UTC.")
@click.option("--to", "end", default=None, help="End (exclusive), UTC; default: the end of the log.")
@click.option("--http", "url", default=None, help="Send to a running service instead of in process.")
@click.option("--key", envvar="PAYFM_API_KEY", default=None, help="API key for --http (or PAYFM_API_KEY).")
@click.pass_context
def replay(ctx: click.Context, start: str, end: str | None, url: str | None, key: str | None) -> None:
    """Stream historical charges and outcomes through the scorer; print latency and the decision mix."""
    from payfm.serving.replay import replay_http, replay_in_process

    ws = _ws(ctx)
    s, e = _date(start), _date(end)
    rep = replay_http(ws, s, e, url, key) if url else replay_in_process(ws, s, e)
    click.echo(f"replayed {rep.charges} charges and {rep.outcomes} outcomes in {rep.wall_s:.1f} s")
    click.echo("latency ms: " + "  ".join(f"{k} {v:.2f}" for k, v in rep.percentiles().items()))
    total = max(rep.charges, 1)
    for outcome, n in rep.mix.most_common():
        click.echo(f"  {outcome:<14} {n:>8}  {100 * n / total:5.1f}%")
    for err, n in rep.errors.most_common(5):
        click.echo(f"  error {err}: {n}")
