"""Property-based fuzzing of the HTTP API against its OpenAPI schema: no 5xx, no tracebacks, ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payfm.events.workspace import Workspace
from payfm.serving.app import create_app
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from test_serving_scorer import RULES, charge, register

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["2026-03-01T12:00:00Z", "2026-03-01T12:00:00", "usd", "US", "4242424242424242", ""]),
)


def _values_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid-looking values of a JSON schema property, mixed with arbitrary scalars."""
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), _SCALARS)
    return _SCALARS


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, Any]]]:
    from payfm.rules import rulesets

    ws = Workspace.open(Path(tmp_path_factory.mktemp("fuzz")) / "ws", create=True)
    register(ws, 1.0, "production")
    rulesets.save(ws, RULES, activate=True, set_name="tiny")
    scorer = Scorer.open(ws)
    key = KeyStore(ws.root / "serving" / "keys.db").create("fuzz")
    with TestClient(
        create_app(scorer, KeyStore(ws.root / "serving" / "keys.db")), raise_server_exceptions=False
    ) as c:
        yield c, {"Authorization": f"Bearer {key}"}, c.get("/openapi.json").json()
    scorer.close(snapshot=False)


def _bodies(spec: dict[str, Any], name: str) -> st.SearchStrategy[dict[str, Any]]:
    props = spec["components"]["schemas"][name]["properties"]
    base = charge(1) if name == "Charge" else {}
    return st.fixed_dictionaries(
        {}, optional={k: _values_for(v) for k, v in props.items()} | {"extra_field": _SCALARS}
    ).map(lambda d: {**base, **d})


ENDPOINTS = [
    ("/v1/charges/score", "Charge"),
    ("/v1/disputes", "Dispute"),
    ("/v1/early_fraud_warnings", "EarlyFraudWarning"),
    ("/v1/refunds", "Refund"),
]


@pytest.mark.parametrize(("path", "model"), ENDPOINTS)
def test_post_endpoints_never_fail_with_5xx(
    api: tuple[TestClient, dict[str, str], dict[str, Any]], path: str, model: str
) -> None:
    c, h, spec = api
    assert path in spec["paths"]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=_bodies(spec, model))
    def run(body: dict[str, Any]) -> None:
        r = c.post(path, json=body, headers=h)
        assert r.status_code < 500, r.text
        assert "Traceback" not in r.text
        if r.status_code >= 400:
            assert set(r.json()) == {"error"}
        assert "4242424242424242" not in r.text

    run()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    status=_SCALARS, limit=_SCALARS, offset=_SCALARS, cid=st.text(min_size=1, max_size=20), reason=_SCALARS
)
def test_review_endpoints_never_fail_with_5xx(
    api: tuple[TestClient, dict[str, str], dict[str, Any]],
    status: Any,
    limit: Any,
    offset: Any,
    cid: str,
    reason: Any,
) -> None:
    c, h, _ = api
    params = {
        k: str(v) for k, v in (("status", status), ("limit", limit), ("offset", offset)) if v is not None
    }
    r = c.get("/v1/reviews", params=params, headers=h)
    assert r.status_code < 500 and "Traceback" not in r.text
    r = c.post(
        f"/v1/reviews/{quote(cid, safe='')}/close",
        json={"reason": reason},
        headers=h,
    )
    assert r.status_code < 500 and "Traceback" not in r.text
