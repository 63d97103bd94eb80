"""NumPy integers in an outcome's amount (a notebook calling :meth:`Scorer.record_outcome` with an
``np.int64`` from a DataFrame): taken as Python's ``int``, as :func:`normalize_charge` takes a charge's; a
boolean or a NumPy float is still refused, naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from payfm.events.workspace import Workspace
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from test_serving_outcome_input import dispute, refund
from test_serving_reviews import charge


@pytest.fixture()
def scorer(tmp_path: Path) -> Iterator[Scorer]:
    s = Scorer.open(Workspace.open(tmp_path / "ws", create=True))
    yield s
    s.close(snapshot=False)


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16])
def test_a_numpy_integer_amount_is_an_integer(scorer: Scorer, kind: type[np.integer]) -> None:
    scorer.score(charge(1))
    answer = scorer.record_outcome("refunds", refund("re_np", "ch_1", amount=kind(1_000)))
    assert answer["id"] == "re_np" and not answer["duplicate"]
    (_, stored), *_ = [(k, p) for k, p in scorer.log.outcomes_of("ch_1") if k == "refunds"]
    assert stored["amount"] == 1_000 and type(stored["amount"]) is int
    json.dumps(stored)  # the decision log keeps it as JSON
    again = scorer.record_outcome("refunds", refund("re_np", "ch_1", amount=1_000))  # a retry, as JSON sends
    assert again["duplicate"]
    disputed = scorer.record_outcome("disputes", dispute("dp_np", "ch_1", amount=kind(1_000)))
    assert not disputed["duplicate"]


def test_a_boolean_or_a_numpy_float_amount_is_still_refused(scorer: Scorer) -> None:
    scorer.score(charge(1))
    with pytest.raises(InvalidInput, match=re.escape("Got a NumPy float32 (1000.0).")) as e:
        scorer.record_outcome("refunds", refund("re_f", "ch_1", amount=np.float32(1_000)))
    assert e.value.field == "amount"
    with pytest.raises(InvalidInput, match=re.escape("Got a boolean (true).")):
        scorer.record_outcome("refunds", refund("re_b", "ch_1", amount=True))
    with pytest.raises(InvalidInput, match="must be an integer") as e:  # (np.bool_ is no Integral)
        scorer.record_outcome("refunds", refund("re_nb", "ch_1", amount=np.bool_(True)))
    assert e.value.field == "amount"
