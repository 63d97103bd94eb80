"""The command line's consoles print text as written: Rich's markup and emoji codes are off by default, so a
message, a rule, a path or a value holding `[card number removed]`, `[/x]` or `:credit_card:` is neither
dropped as a style tag, nor a MarkupError traceback, nor an emoji (an analyst's walkthrough: `rules check`
of `:credit_card:` said "Unknown attribute '💳'"). Styled output (the demo's bold titles) still renders."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from payfm.cli import render
from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace

TRICKY = "[card number removed] [/x] [bold]b :credit_card: :email:"


def invoke(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, list(args))
    error = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, error


def test_both_consoles_print_brackets_and_emoji_codes_as_written() -> None:
    for console in (render.console, render.err_console):
        with console.capture() as got:
            console.print(TRICKY, highlight=False, soft_wrap=True)
        assert got.get() == TRICKY + "\n"


def test_rules_check_names_an_attribute_written_like_an_emoji_code(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    emo = tmp_path / "emo.rules"
    emo.write_text("a: block if :credit_card: > 1\nb: review if :phone: = 1\n")
    code, out, error = invoke("-w", str(ws.root), "rules", "check", str(emo))
    assert code == 1 and error is None, out
    assert "Unknown attribute ':credit_card:'" in out and "Unknown attribute ':phone:'" in out, out
    assert "\U0001f4b3" not in out and "\u260e" not in out  # 💳, ☎
    emo.write_text("a: block if :email: > 1\n")
    code, out, error = invoke("-w", str(ws.root), "rules", "check", str(emo))
    assert code == 1 and "Unknown attribute ':email:'" in out and "\u2709" not in out, out  # ✉


def test_a_workspace_path_prints_as_written(tmp_path: Path) -> None:
    """`generate` says where it wrote: a path holding an emoji code or brackets is that path."""
    where = tmp_path / "ws :email: [card number removed] [red]x"
    code, out, error = invoke("-w", str(where), "generate", "--charges", "1000", "--days", "1")
    assert code == 0 and error is None, out
    assert "".join(str(where).split()) in "".join(out.split()), out
    assert "\u2709" not in out


def test_an_evaluate_warning_prints_brackets_as_written(tmp_path: Path, monkeypatch: Any) -> None:
    """evaluate's progress messages were printed as markup: `[/x]` in one (a model's or a path's name)
    ended the command in a MarkupError traceback, `[card number removed]` vanished."""
    ws = Workspace.open(tmp_path / "ws", create=True)

    def evaluate_models(*_args: Any, progress: Any, **_kwargs: Any) -> Any:
        progress("warning: model [card number removed] was trained on [/x] :email:")
        progress("scoring [bold]m[/bold] on the window")
        raise ConfigError("stopped here")

    monkeypatch.setattr("payfm.cli.evaluate.evaluate_models", evaluate_models)
    code, out, error = invoke("-w", str(ws.root), "evaluate")
    assert error is None and code == 1, (out, error)
    assert "warning: model [card number removed] was trained on [/x] :email:" in out, out
    assert "scoring [bold]m[/bold] on the window" in out and "Error: stopped here" in out, out


def test_the_summary_and_the_demo_still_style_their_titles(tmp_path: Path, monkeypatch: Any) -> None:
    """The demo's section titles are bold text (never a literal `[bold]`); the summary's total row too."""
    screen = io.StringIO()
    styled = Console(file=screen, force_terminal=True, width=120, markup=False, emoji=False)
    for module in ("payfm.cli.demo", "payfm.cli.render"):
        monkeypatch.setattr(f"{module}.console", styled)
    code, out, error = invoke(
        "-w", str(tmp_path / "ws"), "demo", "--charges", "2000", "--days", "5", "--skip-models"
    )
    shown = screen.getvalue()
    assert code == 0 and error is None, out
    assert "[bold]" not in shown and "[/bold]" not in shown and "[dim]" not in shown
    bold = "\x1b[1m"
    assert f"{bold}1. Synthetic payments world" in shown, shown[:2000]
    assert f"{bold}2. Event log summary" in shown and f"{bold}all fraud" in shown


@pytest.mark.parametrize("stage", ["[/x] :email: stage", "[card number removed]"])
def test_a_plain_progress_line_prints_its_stage_as_written(stage: str) -> None:
    """Where stderr is no terminal, a long stage says where it is in a plain line: its name as written."""
    times = iter([0.0, 11.0])
    with render.err_console.capture() as got:
        say = render._PlainProgress(clock=lambda: next(times))
        say(stage, 0, 2)
        say(stage, 1, 2)
    assert got.get().startswith(f"{stage}: 1/2"), got.get()
