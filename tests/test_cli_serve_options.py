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
        ("--snapshot-every", "0", "x>=1"),
    ],
)
def test_out_of_range_serve_options_are_refused(
    option: str, value: str, expected: str, tmp_path: str
) -> None:
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "serve", option, value])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '{option}': {value}" in result.output and expected in result.output
