"""The `payfm` command line: thin click groups per noun over the library.

Every user error (:class:`payfm.errors.PayfmError`) prints one message and exits 1, without a traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any

import click

from payfm import __version__, interrupts
from payfm.cli.demo import demo
from payfm.cli.evaluate import evaluate
from payfm.cli.events import compact, generate, import_, sql, summary
from payfm.cli.features import features
from payfm.cli.fm import fm
from payfm.cli.lists import lists
from payfm.cli.models import models, train
from payfm.cli.review import review
from payfm.cli.rules import rules
from payfm.cli.serve import replay, serve
from payfm.errors import PayfmError
from payfm.events.cards import redact_card_numbers, shown_text
from payfm.events.workspace import DEFAULT_WORKSPACE


class _Group(click.Group):
    """Turns library errors into one clean message and exit status 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:  # `payfm --4111...`: the root's own options, parsed before invoke
            said = e.format_message()
            if redact_card_numbers(said) == said:
                raise
            raise click.UsageError(redact_card_numbers(said), ctx=e.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = self._invoke(ctx)
        except BaseException:
            # After a SIGTERM the command ends with its status, whatever the exception became on the way: a
            # library that called back into Python wraps it in an error of its own (DuckDB's "offering a
            # filter to the source ... failed: SystemExit: 143"), or drops it and the work goes on.
            if interrupts.received:
                raise SystemExit(128 + interrupts.received[-1]) from None
            raise
        interrupts.check()
        return result

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PayfmError as e:  # a message never echoes a card number, whatever it quotes
            raise click.ClickException(redact_card_numbers(str(e))) from None
        except OSError as e:  # a path the system refuses (a read-only folder, a full disk): not a bug
            if e.errno not in REFUSED_BY_THE_SYSTEM or e.filename is None:
                raise
            # The workspace's own writes say so themselves (payfm.events.workspace.write_failed); this is
            # the net for the others (a backfill's feature files in a read-only workspace).
            path = shown_text(os.fsdecode(e.filename), 4096, times=True)
            raise click.ClickException(
                f"Cannot write '{path}': {e.strerror}. Expected a path payfm may write (a folder that is not "
                "read-only, on a disk with free space)."
            ) from None
        except RuntimeError as e:
            # DuckDB turns a signal that arrives during a query (Ctrl-C's KeyboardInterrupt, SIGTERM's
            # SystemExit) into RuntimeError('Query interrupted'): stop as the signal would have.
            if str(e) != DUCKDB_INTERRUPTED:
                raise
            raise click.Abort() from None
        except click.NoSuchOption as e:  # `payfm summary -w DIR`: say where the workspace option goes
            if e.option_name not in ("-w", "--workspace") or e.ctx is None:
                raise click.NoSuchOption(
                    redact_card_numbers(e.option_name),
                    redact_card_numbers(e.message),
                    possibilities=e.possibilities,
                    ctx=e.ctx,
                ) from None
            command = e.ctx.command_path.removeprefix(f"{ctx.command_path} ")
            hint = f"The workspace goes before the command: payfm -w DIR {command} ..."
            raise click.NoSuchOption(e.option_name, f"{e.message} {hint}", ctx=e.ctx) from None
        except click.UsageError as e:  # a usage error quotes the value given ('4111...' is not one of)
            said = e.format_message()
            if redact_card_numbers(said) == said:
                raise
            raise click.UsageError(redact_card_numbers(said), ctx=e.ctx) from None


def _not_empty(value: str) -> str:
    """The workspace option's value, refused when empty (`-w "$WS"` with WS unset would be the current
    folder)."""
    if not value.strip():
        raise click.BadParameter(f"expected a workspace directory. Got {value!r}.", param_hint="--workspace")
    return value


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--workspace",
    "-w",
    envvar="PAYFM_WORKSPACE",
    default=DEFAULT_WORKSPACE,
    show_default=True,
    type=click.Path(file_okay=False),
    callback=lambda ctx, param, value: _not_empty(value),
    help="Workspace directory (or set PAYFM_WORKSPACE). It goes before the command: payfm -w DIR summary.",
)
@click.version_option(__version__, prog_name="payfm")
@click.pass_context
def cli(ctx: click.Context, workspace: str) -> None:
    """payfm: the open ML foundations platform for payments risk.

    \b
    Quick start:
      payfm generate --charges 100000 --days 30     # a synthetic payments world
      payfm summary                                 # what is in the log
      payfm sql "SELECT scenario, count(*) FROM charges GROUP BY 1"
      payfm -w other-ws summary                     # -w (the workspace) goes before the command
    """
    ctx.obj = {"workspace": workspace}


cli.add_command(generate)
cli.add_command(import_)
cli.add_command(sql)
cli.add_command(summary)
cli.add_command(compact)
cli.add_command(demo)
cli.add_command(features)
cli.add_command(fm)
cli.add_command(train)
cli.add_command(models)
cli.add_command(evaluate)
cli.add_command(rules)
cli.add_command(lists)
cli.add_command(serve)
cli.add_command(replay)
cli.add_command(review)


DUCKDB_INTERRUPTED = "Query interrupted"  # the message of DuckDB's error for a query a signal interrupted
# The errors of a path the system refuses, whatever payfm does: said in one line (_Group._invoke).
REFUSED_BY_THE_SYSTEM = frozenset((errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT))


def main() -> None:
    # A SIGTERM (kill, a job scheduler's stop) unwinds like Ctrl-C instead of ending the process where it
    # stands: partial files and temporary folders are removed, locks released. (`payfm serve` sets its own.)
    # It is recorded too (payfm.interrupts): a library that swallows the exception cannot lose it.
    interrupts.received.clear()
    interrupts.abandoned.clear()
    signal.signal(signal.SIGTERM, interrupts.stop)
    try:
        cli(prog_name="payfm")
    except BaseException as e:
        if interrupts.abandoned:  # a thread a second Ctrl-C gave up on: leave now, not when it returns
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1)
        raise
