"""The docs' examples run as written and say what the code says: the errors features.md shows, its online
snippet (what a charge must hold), and reason texts as models.md quotes them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features import definitions
from payfm.features.catalog import default_set
from payfm.features.definitions import Aggregate, Derived, RequestFeature
from payfm.features.offline import backfill
from payfm.synth import WorldConfig, generate_world
from payfm.training.explain import Reason, templates

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_blocks(page: str, after: str) -> list[str]:
    """The ```python blocks of ``docs/<page>`` in the section that starts with the heading ``after``."""
    text = (DOCS / page).read_text().split(after, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_definition_errors_features_md_shows_are_the_ones_raised() -> None:
    [block] = [b for b in _python_blocks("features.md", "## The DSL") if b.startswith(">>> ")]
    lines = block.splitlines()
    examples = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(examples) == 4
    namespace = {**vars(definitions), "Aggregate": Aggregate, "RequestFeature": RequestFeature}
    for code, shown in examples:
        with pytest.raises(ConfigError) as err:
            eval(code.removeprefix(">>> "), namespace)  # the docs' own example text
        assert f"ConfigError: {err.value}" == shown


def test_the_online_snippet_of_features_md_gives_the_offline_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(tmp_path / "payfm-workspace", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=4000, days=10, seed=2)), "replace")
    [snippet] = _python_blocks("features.md", "## Online state")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # the docs' own example text; prints one feature of the last charge
    charges, values = namespace["charges"], namespace["values"]
    assert isinstance(charges, list) and isinstance(values, list) and len(charges) == 1000
    # Every feature the snippet's charges decide alone (no outcome aggregate: it applies none) is the
    # backfill's value: created_us and credential_changed_at_us are what the engine reads.
    fs = default_set()
    path, _ = backfill(ws, fs)
    offline = pq.read_table(path).to_pylist()
    row = next(r for r in offline if r["charge_id"] == charges[-1]["charge_id"])

    def own(f: Aggregate | RequestFeature | Derived) -> bool:
        if isinstance(f, Aggregate):
            return f.source == "charges"
        if isinstance(f, Derived):
            return all(own(fs.get(n)) for n in f.inputs)
        return True

    checked = [f.name for f in fs.features if own(f)]
    assert "since_credential_change" in checked and "local_hour" in checked
    online = dict(zip(fs.names, values, strict=True))
    for name in checked:
        want, got = row[name], online[name]
        assert (want is None) == (got is None), name
        assert want is None or math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12), name


@pytest.mark.parametrize(
    ("feature", "value", "text"),
    [
        ("merchant.count_charges_30d", 1.0, "1 charge on this merchant in the last 30 days; typical: 3"),
        ("merchant.count_charges_30d", 2.0, "2 charges on this merchant in the last 30 days; typical: 3"),
        ("card.count_declined_1h", 1.0, "1 declined charge on this card in the last hour; typical: 3"),
        ("card.count_efws_all", 1.0, "1 early fraud warning on this card so far; typical: 3"),
        ("card.count_fraud_disputes_all", 1.0, "1 fraud dispute on this card so far; typical: 3"),
        ("merchant.count_refunds_7d", 1.0, "1 refund on this merchant in the last 7 days; typical: 3"),
        ("card.count_charges_all", 0.0, "0 charges on this card so far; typical: 3"),
        (
            "card.distinct_ip_address_1d",
            1.0,
            "1 distinct ip address seen with this card in the last day; typical: 3",
        ),
        (
            "card.distinct_ip_address_1d",
            2.0,
            "2 distinct ip addresses seen with this card in the last day; typical: 3",
        ),
        (
            "card.distinct_ip_country_7d",
            4.0,
            "4 distinct ip countries seen with this card in the last 7 days; typical: 3",
        ),
        ("card.since_prev", 1.0, "1 s since the previous charge of this card; typical: 3 s"),
        ("merchant.sum_amount_usd_1h", 1.0, "$1 of charges on this merchant in the last hour; typical: $3"),
    ],
)
def test_reason_texts_count_in_the_singular_and_the_plural(feature: str, value: float, text: str) -> None:
    # models.md quotes '9 charges on this card in the last hour; typical: 0.3'; one is "1 charge"
    assert Reason(feature, value, 3.0, 0.5, templates(default_set())[feature]).text == text


def test_a_template_registered_before_reads_one_in_the_singular_too() -> None:
    # Models keep their templates in their metadata: those written before the plural fix still read well.
    old = "{value} distinct ip addresss seen with this card in the last day; typical: {typical}"
    assert Reason("card.distinct_ip_address_1d", 1.0, 0.0, 0.5, old).text == (
        "1 distinct ip address seen with this card in the last day; typical: 0"
    )
    old = "{value} charges on this merchant in the last 30 days; typical: {typical}"
    assert Reason("merchant.count_charges_30d", 1.0, 0.0, 0.5, old).text.startswith(
        "1 charge on this merchant"
    )


def test_serving_md_fingerprints_a_live_card_as_its_import_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint serving.md shows for a live card is the one the import gave its charges."""
    from payfm.events.importer import import_file

    sample = Path(__file__).parent / "data" / "sparkov_sample.parquet"
    ws = Workspace.open(tmp_path / "sparkov-ws", create=True)  # where the README imports the Sparkov sample
    import_file(ws, sample, "sparkov")
    number = str(pq.read_table(sample, columns=["cc_num"]).column("cc_num")[0].as_py())
    [block] = _python_blocks("serving.md", "## Card fingerprints of live charges")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(block.replace('"4242 4242 4242 4242"', repr(number)), scope)  # the docs' own example
    assert scope["fp"] in set(ws.read("charges", ["card_fingerprint"]).column("card_fingerprint").to_pylist())
