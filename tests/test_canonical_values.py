"""IP addresses and e-mail domains have one canonical spelling everywhere: imports, the decision service,
lists, rules and feature keys. Otherwise a blocklist is dodged by writing `EVIL.COM` or `2001:0db8::0001`."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient

from factories import charges as charge_table
from factories import usd_consistent
from payfm.events.importer import import_file
from payfm.events.schema import RULES, canonical_domain, canonical_ip
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.features.definitions import Aggregate, FeatureSet
from payfm.features.online import OnlineFeatures
from payfm.rules import lists, rulesets
from payfm.rules.db import connect
from payfm.rules.limits import RuleError
from payfm.serving.app import create_app
from payfm.serving.charges import EXAMPLE_FIELDS, normalize_charge
from payfm.serving.errors import InvalidInput
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from payfm.synth.config import WorldConfig
from payfm.synth.generator import generate_world
from test_import import MAPPING, ROWS, write_csv, write_mapping

BLOCKS = (
    "bad_dom: block if :email_domain: in @blocked_domains\nbad_ip: block if :ip_address: in @blocked_ips\n"
)


def charge(i: int, **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": f"2026-03-01T12:00:{i:02d}+00:00", **EXAMPLE_FIELDS, **kw}
    return usd_consistent(c, kw)


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    lists.create_list(w, "blocked_domains", "email_domain")
    lists.add_values(w, "blocked_domains", ["Evil.COM"])
    lists.create_list(w, "blocked_ips", "ip_address")
    lists.add_values(w, "blocked_ips", ["2001:0DB8::1", "10.0.0.2", "::ffff:10.0.0.3"])
    rulesets.save(w, BLOCKS, activate=True, set_name="tiny", author="test")
    return w


def test_the_canonical_forms() -> None:
    assert canonical_ip("2001:0DB8:0000::0001") == "2001:db8::1"
    assert canonical_ip("::ffff:10.0.0.2") == canonical_ip("::FFFF:a00:2") == "10.0.0.2"
    assert canonical_ip("203.0.113.7") == "203.0.113.7"
    assert canonical_domain(" Evil.COM. ") == "evil.com"
    for bad in ("not-an-ip", "010.0.0.1", "1", "fe80::1%" + "x" * 100):
        with pytest.raises(ValueError):
            canonical_ip(bad)


def test_lists_store_the_canonical_form(ws: Workspace) -> None:
    assert lists.list_values(ws, "blocked_domains") == ["evil.com"]
    assert lists.list_values(ws, "blocked_ips") == ["10.0.0.2", "10.0.0.3", "2001:db8::1"]
    lists.create_list(ws, "emails", "email")
    lists.add_values(ws, "emails", ["Ana@Evil.COM."])
    assert lists.list_values(ws, "emails") == ["ana@evil.com"]


def test_an_ip_list_entry_stored_before_mapped_addresses_were_canonical_still_matches(ws: Workspace) -> None:
    with connect(ws) as con:  # what an older payfm stored for '::ffff:10.0.0.4'
        con.execute("INSERT INTO list_values VALUES ('blocked_ips', '::ffff:a00:4')")
    assert "10.0.0.4" in lists.all_values(ws, ["blocked_ips"])["blocked_ips"]


def test_a_domain_blocklist_matches_any_case(scorer: Scorer) -> None:
    for i, domain in enumerate(("evil.com", "EVIL.COM", "Evil.Com.")):
        d = scorer.score(charge(i, email_domain=domain))
        assert (d.outcome, d.rule) == ("blocked", "bad_dom"), domain
    assert scorer.score(charge(9, email_domain="good.com")).outcome == "authorized"


def test_an_ip_blocklist_matches_other_spellings_and_ipv4_mapped_addresses(scorer: Scorer) -> None:
    for i, ip in enumerate(
        ("2001:db8::1", "2001:0db8:0000::0001", "2001:DB8::1", "::ffff:10.0.0.2", "10.0.0.3")
    ):
        d = scorer.score(charge(i, ip_address=ip))
        assert (d.outcome, d.rule) == ("blocked", "bad_ip"), ip
    assert scorer.score(charge(9, ip_address="10.0.0.9")).outcome == "authorized"


def test_a_rule_literal_no_charge_can_hold_is_refused(ws: Workspace) -> None:
    for literal, meant in (("EVIL.COM", "'evil.com'"), ("2001:0db8::0001", "'2001:db8::1'")):
        field = "email_domain" if "." in literal else "ip_address"
        with pytest.raises(RuleError, match=f"Did you mean {meant}"):
            rulesets.save(ws, f"r: block if :{field}: = '{literal}'\n", set_name="tiny")
    with pytest.raises(RuleError, match="IPv4 or IPv6"):
        rulesets.save(ws, "r: block if :ip_address: = 'not-an-ip'\n", set_name="tiny")


def test_a_charge_stores_the_canonical_form() -> None:
    c = normalize_charge(charge(1, ip_address="::ffff:10.0.0.2", email_domain="EVIL.COM."))
    assert (c["ip_address"], c["email_domain"]) == ("10.0.0.2", "evil.com")


def test_an_invalid_ip_is_refused_naming_the_field(ws: Workspace, scorer: Scorer) -> None:
    with pytest.raises(InvalidInput) as e:
        normalize_charge(charge(1, ip_address="not-an-ip"))
    assert e.value.field == "ip_address" and "IPv4 or IPv6" in str(e.value) and "'not-an-ip'" in str(e.value)
    keys = KeyStore(ws.root / "serving" / "keys.db")
    key = keys.create("tests")
    with TestClient(create_app(scorer, keys)) as client:
        r = client.post(
            "/v1/charges/score",
            json=charge(2, ip_address="999.1.1.1"),
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 422 and r.json()["error"]["field"] == "ip_address"


def test_validate_refuses_invalid_ips_by_row_and_never_echoes_a_card_number() -> None:
    t = charge_table(3)
    ips = pa.array(["203.0.113.7", "not-an-ip", "4242424242424242"])
    t = t.set_column(t.schema.get_field_index("ip_address"), "ip_address", ips)
    with pytest.raises(ValidationError) as e:
        validate_events("charges", t)
    text = str(e.value)
    assert "row 2, column 'ip_address': expected an IPv4 or IPv6 address" in text and "'not-an-ip'" in text
    assert "row 3, column 'ip_address'" in text and "4242424242424242" not in text


def test_validate_returns_canonical_values() -> None:
    t = charge_table(4)
    domains = pa.array(["EVIL.COM", "evil.com", None, "Gmail.com."])
    ips = pa.array(["2001:0db8::0001", "::ffff:10.0.0.2", None, "203.0.113.7"])
    t = t.set_column(t.schema.get_field_index("email_domain"), "email_domain", domains)
    t = t.set_column(t.schema.get_field_index("ip_address"), "ip_address", ips)
    out = validate_events("charges", t)
    assert out["email_domain"].to_pylist() == ["evil.com", "evil.com", None, "gmail.com"]
    assert out["ip_address"].to_pylist() == ["2001:db8::1", "10.0.0.2", None, "203.0.113.7"]


def test_an_import_stores_domains_lower_case_and_ips_canonical(tmp_path: Path) -> None:
    rows = {**ROWS, "dom": ["EVIL.COM", "evil.com", "Evil.Com.", "x.org"]}
    rows["ip"] = ["2001:0DB8::1", "::ffff:10.0.0.2", "10.0.0.2", "203.0.113.7"]
    mapping = copy.deepcopy(MAPPING)
    mapping["columns"].update(email_domain="dom", ip_address="ip")
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, mapping))
    stored = ws.read("charges").sort_by("charge_id")
    assert stored["email_domain"].to_pylist() == ["evil.com", "evil.com", "evil.com", "x.org"]
    assert stored["ip_address"].to_pylist() == ["2001:db8::1", "10.0.0.2", "10.0.0.2", "203.0.113.7"]


def test_online_features_count_every_spelling_under_one_key() -> None:
    day = timedelta(days=1)
    online = OnlineFeatures(
        FeatureSet("t", (Aggregate("email", "count", window=day), Aggregate("ip", "count", window=day)))
    )
    spellings = [("EVIL.COM", "2001:db8::1"), ("evil.com", "2001:0DB8::0001"), ("Evil.com.", "2001:db8:0::1")]
    seen = [
        online.vector_then_update(normalize_charge(charge(i, email_domain=d, ip_address=ip)))
        for i, (d, ip) in enumerate(spellings)
    ]
    assert [list(v) for v in seen] == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_the_synthetic_world_is_already_canonical() -> None:
    """So generated worlds, their digests and offline/online parity are unchanged by canonicalization."""
    tables = [
        t for name, t in generate_world(WorldConfig(charges=5_000, days=7, seed=3)) if name == "charges"
    ]
    world = pa.concat_tables(tables)
    for name in ("ip_address", "email_domain"):
        rule = RULES["charges"][name]
        assert rule.canonical is not None
        values = pc.unique(world[name]).drop_null().to_pylist()
        assert len(values) > 10 and [v for v in values if rule.canonical(v) != v] == []
    assert validate_events("charges", world).equals(world)
