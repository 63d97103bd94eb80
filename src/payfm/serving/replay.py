"""Replay history through the decision service as production would see it: in process or over HTTP.

Charges of ``[start, end)`` and their outcomes are merged in time order (an outcome at time tau before any
charge at t >= tau, as :func:`payfm.features.parity.replay` orders them) and sent one by one. In process, a
fresh online state is first warmed with every event before ``start`` (and only those: the period's charges
must not be in it yet) and decisions go to a scratch decision log, so a replay never touches the serving
log, the serving state or the event log. Reports latency percentiles and the decision mix.

With ``authorize_after``, each charge is sent as production sends it, before authorization (without its
``outcome`` and ``decline_code``), and the log's outcome follows as the processor's answer
(``POST /v1/charges/{id}/authorization``), except for a charge the service blocked (never authorized).
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError, scrubbed, shown_url
from payfm.events.cards import mask_long_numbers
from payfm.events.schema import SCHEMAS, TABLES, TIMESTAMP, time_bound
from payfm.events.text import escaped
from payfm.events.workspace import Workspace, WorkspaceWriter, WriteMode, opened
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log
from payfm.features.stores import MemoryStore
from payfm.serving.decision import Decision
from payfm.serving.errors import InvalidInput
from payfm.serving.outcome_checks import OUTCOME_TABLES
from payfm.serving.scorer import Scorer, ScorerConfig

# The ground truth never reaches the scorer; the processor's outcome does (features count declines).
_CHARGE_DROP = ("scenario",)


@dataclass
class ReplayReport:
    charges: int = 0
    outcomes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    mix: Counter[str] = field(default_factory=Counter)
    # per charge, as the sender saw it, and in process the decisions' own latency_ms (the repr sums these
    # lists up: their count, p50 and p99)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    decide_ms: list[float] = field(default_factory=list, repr=False)
    wall_s: float = 0.0
    durability: str = ""  # in process: of the scratch decision log
    warmed: int = 0  # charges applied to the state before the period (in process)
    warm_s: float = 0.0
    authorizations: int = 0  # authorization results reported after their decisions (authorize_after)
    # over HTTP: tries of requests the service shed (503/429 with Retry-After) after their first, the seconds
    # waited before them, and requests sent again on a new connection (the service closed an idle one)
    retries: int = 0
    retry_wait_s: float = 0.0
    reconnects: int = 0
    # decisions per ruleset version that made them (None: no ruleset): over HTTP a charge decided before is
    # answered with its stored decision, made by the ruleset active then
    rulesets: Counter[int | None] = field(default_factory=Counter)

    def __repr__(self) -> str:
        """The fields, each list of latencies as its count, p50 and p99 (a notebook printed 834 floats).

        >>> ReplayReport(charges=2, latencies_ms=[1.0, 3.0])  # doctest: +ELLIPSIS
        ReplayReport(charges=2, outcomes=0, ..., latencies_ms=<2: p50 2 ms, p99 2.98 ms>, decide_ms=<none>)
        """
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        for name in ("latencies_ms", "decide_ms"):
            values = getattr(self, name)
            p = self.percentiles(values)
            said = f"{len(values)}: p50 {p['p50']:.3g} ms, p99 {p['p99']:.3g} ms" if p else "none"
            shown.append(f"{name}=<{said}>")
        return f"ReplayReport({', '.join(shown)})"

    def percentiles(self, values: list[float] | None = None) -> dict[str, float]:
        """p50, p90, p99, p99.9 and max of ``values`` (default: the per-charge latencies)."""
        values = self.latencies_ms if values is None else values
        if not values:
            return {}
        a = np.asarray(values)
        return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99, 99.9)} | {"max": float(a.max())}


_RESULT = ("outcome", "decline_code")


def _before_authorization(row: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """A logged charge as the service sees it before authorization, and the processor's answer to it: the
    outcome and, for a decline, the decline code."""
    outcome = row.get("outcome")
    code = row.get("decline_code") if outcome == "issuer_declined" else None
    return {k: v for k, v in row.items() if k not in _RESULT}, outcome, code


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def events(
    ws: Workspace, start: datetime | None, end: datetime | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` of ``[start, end)`` in time order; outcomes first at equal times."""
    con = ws.connect()
    try:
        where = []
        if start is not None:
            where.append(f"created >= TIMESTAMPTZ '{start.isoformat()}'")
        if end is not None:
            where.append(f"created < TIMESTAMPTZ '{end.isoformat()}'")
        w = ("WHERE " + " AND ".join(where)) if where else ""
        tables: dict[str, list[dict[str, Any]]] = {}
        for t in ("charges", *OUTCOME_TABLES):
            tables[t] = con.sql(f"SELECT * FROM {t} {w}").to_arrow_table().to_pylist() if ws.files(t) else []
    finally:
        con.close()
    merged: list[tuple[Any, int, str, str, dict[str, Any]]] = []
    for t, rows in tables.items():
        idc = "charge_id" if t == "charges" else OUTCOME_TABLES[t]
        for r in rows:
            merged.append((r["created"], 1 if t == "charges" else 0, str(r[idc]), t, r))
    merged.sort(key=lambda x: x[:3])
    for _, _, _, t, r in merged:
        names = SCHEMAS[t].names
        yield t, {k: _iso(r[k]) for k in names if k in r and not (t == "charges" and k in _CHARGE_DROP)}


def replay_in_process(
    ws: Workspace,
    start: datetime | date | str | None,
    end: datetime | date | str | None,
    config: ScorerConfig | None = None,
    progress: Callable[[int], None] | None = None,
    warm_progress: Callable[[int, int], None] | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    durability: str = "os",
    authorize_after: bool = False,
) -> ReplayReport:
    """Warm a fresh online state with the history before ``start``, then decide every charge of the period.

    The state starts empty (never from the server's snapshot, which may already hold the period) and is
    warmed by :func:`warm_before`; decisions go to a scratch decision log; nothing is appended to the event
    log. ``warm_progress(done, total)`` reports the warm-up, ``progress(charges)`` the replay, and
    ``on_decision`` receives every decision (with its features). The scratch log is thrown away, so it is
    not fsynced by default (``durability="os"``); pass ``"fsync"`` to time the production commit.
    ``authorize_after``: see the module docstring. ``start`` and ``end`` are aware datetimes, dates or ISO
    texts, as ``--from`` and ``--to`` take them.
    """
    ws = opened(ws, "replay_in_process")
    start, end = (
        time_bound(start, "The replay start", ConfigError),
        time_bound(end, "The replay end", ConfigError),
    )
    with tempfile.TemporaryDirectory(prefix="payfm-replay-") as tmp:
        scorer = Scorer.open(
            ws,
            decision_log=f"sqlite:///{Path(tmp) / 'replay.db'}",
            state=MemoryStore(),
            # the period's time is the log's, ahead of the clock or behind it (a world generated into the
            # future, a month of history)
            config=replace(config or ScorerConfig(), max_future_s=None, max_past_s=None),
            durability=durability,
        )
        scorer.append_outcomes = False
        try:
            t0 = time.perf_counter()
            warmed = warm_before(scorer.online, ws, start, warm_progress) if start else 0
            if start:  # a model on foundation-model embeddings: its embedders see the same history
                scorer.warm_embedders(_Before(ws, start))
            warm_s = time.perf_counter() - t0
            decide: list[float] = []

            def seen(d: Decision) -> None:
                decide.append(d.latency_ms)
                if on_decision is not None:
                    on_decision(d)

            reported = [0]

            def send(table: str, row: dict[str, Any]) -> Decided:
                if table != "charges" or not authorize_after:
                    return _in_process(scorer, table, row, seen)
                charge, outcome, code = _before_authorization(row)
                decided = _in_process(scorer, table, charge, seen)
                if decided is not None and decided[0] != "blocked" and outcome is not None:
                    scorer.record_authorization(str(row["charge_id"]), outcome, code)
                    reported[0] += 1
                return decided

            rep = _run(events(ws, start, end), send, progress)
            rep.warmed, rep.warm_s, rep.decide_ms = warmed, warm_s, decide
            rep.authorizations = reported[0]
            rep.durability = durability
            return rep
        finally:
            scorer.close(snapshot=False)


def warm_before(
    online: OnlineFeatures,
    ws: Workspace,
    start: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Apply every charge and outcome of ``ws`` created before ``start`` to ``online``; returns the charges.

    :func:`payfm.features.parity.apply_log`, the one warm-up path of the serving state (in its time order:
    outcomes at time tau before charges at t >= tau), reads the log through :class:`_Before`, a read-only
    view that ends at ``start``: nothing is copied.
    """
    history = _Before(ws, start)
    if not history.read("charges", ["created"]).num_rows:
        return 0
    return apply_log(online, history, progress)


class _Before(Workspace):
    """A read-only view of a workspace: its events created before ``end`` (``read`` and ``connect``)."""

    def __init__(self, ws: Workspace, end: datetime) -> None:
        super().__init__(ws.root)
        self.end = end

    def read(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        data = super().read(table, None if columns is None else sorted({*columns, "created"}))
        data = data.filter(pc.less(data["created"], pa.scalar(self.end, TIMESTAMP)))
        return data.select(list(columns)) if columns is not None else data

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = super().connect()
        (db,) = con.execute("SELECT current_database()").fetchone() or ("memory",)
        end = self.end.astimezone(UTC).isoformat()
        for table in TABLES:  # temporary views shadow the whole tables
            con.execute(
                f'CREATE TEMP VIEW {table} AS SELECT * FROM "{db}".main.{table} '
                f"WHERE created < TIMESTAMPTZ '{end}'"
            )
        return con

    @contextmanager
    def writer(
        self, mode: WriteMode = "append", wait_s: float = 0.0, *, validate: bool = True
    ) -> Iterator[WorkspaceWriter]:
        raise TypeError("A view of a workspace's history is read-only.")
        yield  # a generator, as the context manager it overrides


# What sending an event gave: a charge's (outcome, ruleset version that decided it); None for an outcome.
Decided = tuple[str, int | None] | None


def _in_process(
    scorer: Scorer, table: str, row: dict[str, Any], on_decision: Callable[[Decision], None]
) -> Decided:
    if table == "charges":
        d = scorer.score(row)
        on_decision(d)
        return d.outcome, d.ruleset_version
    scorer.record_outcome(table, row)
    return None


def _error_of(data: bytes) -> dict[str, Any] | None:
    """The service's ``error`` object (``type``, ``message``) of an answer's body; None if it holds none."""
    import json

    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return error if isinstance(error, dict) and {"type", "message"} <= error.keys() else None


def replay_http(
    ws: Workspace,
    start: datetime | None,
    end: datetime | None,
    url: str,
    key: str | None,
    progress: Callable[[int], None] | None = None,
    authorize_after: bool = False,
) -> ReplayReport:
    """Send the period's charges and outcomes to a running service at ``url`` (latency seen by the client;
    ``host:port`` without a scheme means ``http://host:port``, ``[::1]:8000`` an IPv6 address);
    ``authorize_after``: see the module docstring (the charge's latency is its decision's, without its
    answer's). A request the service sheds (503 or 429 with ``Retry-After``) is tried again
    (:meth:`_Client.post`); one on a kept-alive connection the service closed meanwhile, on a new
    connection (:meth:`_Client.call`)."""
    import json
    from urllib.parse import quote

    paths = {"charges": "/v1/charges/score", "disputes": "/v1/disputes", "refunds": "/v1/refunds"}
    paths["early_fraud_warnings"] = "/v1/early_fraud_warnings"
    client = _Client(url, key)
    try:
        client.call("GET", "/healthz")  # before the first event: a wrong URL fails here, not once per event
        reported = [0]

        def send(table: str, row: dict[str, Any]) -> Decided:
            if table != "charges":
                client.post(paths[table], row)
                return None
            charge, outcome, code = _before_authorization(row) if authorize_after else (row, None, None)
            answer = json.loads(client.post(paths[table], charge))
            version = answer.get("ruleset_version")
            if version is not None and (type(version) is not int or version < 1):  # the service's word only
                raise InvalidInput("HTTP 200 with a ruleset_version that is no version number")
            decided = str(answer.get("outcome")), version
            if authorize_after and decided[0] != "blocked" and outcome is not None:
                path = f"/v1/charges/{quote(str(row['charge_id']), safe='')}/authorization"
                client.post(path, {"outcome": outcome, "decline_code": code})
                reported[0] += 1
            return decided

        # (the window is read at the first event, after /healthz: that connection may sit idle meanwhile
        # for longer than the service keeps it open, and the first request then goes on a new one)
        rep = _run(events(ws, start, end), send, progress)
        rep.authorizations = reported[0]
        rep.retries, rep.retry_wait_s, rep.reconnects = client.retries, client.retry_wait_s, client.reconnects
        return rep
    finally:
        client.close()


class Aborted(ConfigError):
    """A replay over HTTP that cannot go on: the service does not answer (connection refused, reset or timed
    out), refuses the API key, which every later request would meet too, or sheds request after request
    beyond their retries."""


# A kept-alive connection that the service closed while it sat idle (uvicorn's --keep-alive-s, 5 s by
# default) fails the next request as it is sent, or gives it no status line (RemoteDisconnected is a
# ConnectionResetError): the request is sent once more on a new connection, as any HTTP client does.
# (TLS: SSLEOFError, the service's close_notify of an idle connection)
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError)
_SHED = (503, 429)  # statuses the service answers with Retry-After: try again after it (docs/serving.md)
_RETRIES = 5  # more tries of a shed request, each after its Retry-After
_MAX_WAIT_S = 5.0  # the longest wait before one (a Retry-After of an hour is not waited for)
_GIVE_UP_AFTER = 3  # requests in a row still shed after all their tries: the replay stops


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait before trying a shed request again, from its ``Retry-After`` header (delta-seconds
    or an HTTP date; at most 5 s, at least 0; 1 s for a value that is neither); None without one (a 503
    that asks for no retry, as a proxy with no server behind it answers, is not tried again).

    >>> retry_after_s("1"), retry_after_s("3600"), retry_after_s("soon"), retry_after_s(None)
    (1.0, 5.0, 1.0, None)
    >>> retry_after_s("Wed, 21 Oct 2026 07:28:02 GMT", datetime(2026, 10, 21, 7, 28, tzinfo=UTC))
    2.0
    """
    import math
    from email.utils import parsedate_to_datetime

    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 1.0
        if when.tzinfo is None:  # (RFC 9110 dates are GMT)
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return 1.0 if math.isnan(seconds) else min(max(seconds, 0.0), _MAX_WAIT_S)


class _Client:
    """The replay's client of one decision service: one kept-alive connection (HTTP/1.1), opened again when
    the service closed it (:meth:`call`); shed requests tried again (:meth:`post`). Counts both."""

    def __init__(self, url: str, key: str | None) -> None:
        import http.client
        from urllib.parse import urlsplit

        if "://" not in url:  # "localhost:8000", as uvicorn prints it: split as a URL, it would be no host
            url = f"http://{url}"
        self.url, self.key = url, key
        self.shown = shown_url(url)  # a URL may carry a password (http://user:pw@host): never printed
        self.headers = {"Content-Type": "application/json"} | (
            {"Authorization": f"Bearer {key}"} if key else {}
        )
        u = urlsplit(url)
        try:
            port = u.port
        except ValueError:  # not a number: what the URL holds after the host's ':' (or a password's piece)
            raise ConfigError(
                f"--http: expected http://HOST:PORT with a numeric port. Got {self.shown!r}."
            ) from None
        secure = u.scheme == "https"
        connection = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        self.conn = connection(u.hostname or "127.0.0.1", port or (443 if secure else 80), timeout=30)
        self.reconnects = 0  # requests sent again on a new connection
        self.retries = 0  # tries of shed requests after the first
        self.retry_wait_s = 0.0  # the waits before them
        self._shed_in_a_row = 0  # requests still shed after all their tries, since the last one that was not

    def close(self) -> None:
        self.conn.close()

    def call(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes, str | None]:
        """The status, body and ``Retry-After`` of a request; :class:`Aborted` when the service does not
        answer. A request on a reused connection that fails before any byte of its answer because the
        service closed that connection (:data:`_STALE`) is sent once more on a new one. That is safe for
        every request the replay makes: a GET, and POSTs that are idempotent by their charge's or outcome's
        id (the service answers a charge it decided with its stored decision and records an outcome or the
        same authorization result once), so even one the service took before the connection broke is not
        counted twice. A failure on a new connection (refused, reset, timed out) is the service's: no
        retry."""
        import http.client

        for again in (False, True):
            reused = self.conn.sock is not None  # (http.client drops it when a response said "close")
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                r = self.conn.getresponse()
            except _STALE as e:
                self.conn.close()
                if reused and not again:
                    self.reconnects += 1
                    continue
                raise self._gone(e) from None
            except (OSError, http.client.HTTPException) as e:  # refused, timed out: stop, say so
                self.conn.close()
                raise self._gone(e) from None
            try:
                return r.status, r.read(), r.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as e:  # cut in the middle of its answer
                self.conn.close()
                raise self._gone(e) from None
        raise AssertionError("unreachable")  # pragma: no cover - the second pass returns or raises

    def _gone(self, e: Exception) -> Aborted:
        return Aborted(
            f"No decision service answered at {self.shown} ({type(e).__name__}: "
            f"{scrubbed(str(e), self.url)}). Start one with `payfm serve`, or check --http."
        )

    def post(self, path: str, row: dict[str, Any]) -> bytes:
        """The body of a 200 answer to ``row`` posted to ``path``; :class:`InvalidInput` for another status
        (an error of this event), :class:`Aborted` for a 401 or a service that sheds every request.

        A 503 or 429 with ``Retry-After`` (load shedding, a backend that failed: nothing was recorded, and
        the service asks to send the same body again) is tried again after the wait it asks for
        (:func:`retry_after_s`), up to :data:`_RETRIES` more times; one still shed then is this event's
        error, and :data:`_GIVE_UP_AFTER` such events in a row stop the replay (the service is down for
        good, and each event would wait again)."""
        import json

        body = json.dumps(row)
        for tries in range(_RETRIES + 1):
            status, data, after = self.call("POST", path, body)
            wait = retry_after_s(after) if status in _SHED else None
            if wait is None or tries == _RETRIES:
                break
            self.retries += 1
            self.retry_wait_s += wait
            time.sleep(wait)
        shed = status in _SHED and wait is not None
        self._shed_in_a_row = self._shed_in_a_row + 1 if shed else 0
        if status == 401:
            raise self._refused(data)
        if status != 200:
            error = _error_of(data)
            why = f"{error['type']}: {error['message']}" if error else data[:80].decode("utf-8", "replace")
            if self._shed_in_a_row >= _GIVE_UP_AFTER:
                raise Aborted(
                    f"The decision service at {self.shown} answered HTTP {status} "
                    f"{escaped(mask_long_numbers(scrubbed(why, self.url)))[:200]} "
                    f"to {_GIVE_UP_AFTER} requests in a row, each tried {_RETRIES + 1} times as its "
                    "Retry-After asked: stopped. Check the service's log and its /healthz."
                )
            raise InvalidInput(f"HTTP {status} {why}")
        return data

    def _refused(self, data: bytes) -> Aborted:
        """A 401: every later request would meet it too."""
        if self.key is None:
            return Aborted(
                f"The decision service at {self.shown} asks for an API key (401) and none was given: "
                "pass --key-file (or --key, or set PAYFM_API_KEY; `payfm serve keys create NAME` "
                "makes one)."
            )
        error = _error_of(data)  # the service's reason (a revoked key says so), as plain text
        said = " " + escaped(mask_long_numbers(str(error["message"])))[:400] if error else ""
        return Aborted(
            f"The decision service at {self.shown} refused the API key (401):{said} Check --key-file, "
            "--key or PAYFM_API_KEY."
        )


def _run(
    stream: Iterator[tuple[str, dict[str, Any]]],
    send: Callable[[str, dict[str, Any]], Decided],
    progress: Callable[[int], None] | None,
) -> ReplayReport:
    rep = ReplayReport()
    t_start = time.perf_counter()
    for table, row in stream:
        t0 = time.perf_counter()
        try:
            decided = send(table, row)
        except Aborted:
            raise
        except Exception as e:
            rep.errors[str(e) or type(e).__name__] += 1  # (whole: a cut one read "a retry must send the")
            continue
        if table == "charges":
            rep.latencies_ms.append((time.perf_counter() - t0) * 1000)
            rep.charges += 1
            if decided is not None:
                rep.mix[decided[0]] += 1
                rep.rulesets[decided[1]] += 1
            if progress and rep.charges % 1000 == 0:
                progress(rep.charges)
        else:
            rep.outcomes += 1
    rep.wall_s = time.perf_counter() - t_start
    return rep
