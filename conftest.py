"""The docstrings' examples (``--doctest-modules`` over src/) make their temporary folders under pytest's
own temporary folder, which pytest cleans, not in the system's (tempfile.mkdtemp in an example)."""

from __future__ import annotations

import tempfile

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_temp_folder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
