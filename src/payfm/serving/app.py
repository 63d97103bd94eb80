"""The HTTP app: thin FastAPI handlers over a :class:`~payfm.serving.scorer.Scorer`.

Each handler parses (pydantic models generated from the event schema, extra fields forbidden), calls one
library method and formats. One exception handler turns every :class:`payfm.errors.PayfmError` into
``{"error": {"type", "message", "field"}}`` with the error's HTTP status; request validation errors become 422
naming the field, without echoing the input; anything unexpected is a 500 without a traceback.
:class:`Guard` (plain ASGI middleware) sheds load beyond a bounded number of requests in flight or a bounded
event-loop queueing delay (503 with Retry-After), refuses bodies over the size limit (413) and any body
holding a full card number (422, never echoed) before anything parses it. The score endpoint, the hot path,
parses its body itself and awaits only the durable commit (see ``score`` in :func:`create_app`).
"""

from __future__ import annotations

import asyncio
import email.message
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payfm.errors import PayfmError
from payfm.events.cards import contains_card_number
from payfm.serving.api_models import (
    AuthorizationIn,
    AuthorizationOut,
    ChargeIn,
    DecisionOut,
    DisputeIn,
    EarlyFraudWarningIn,
    OutcomeOut,
    RefundIn,
    field_problem,
)
from payfm.serving.charges import card_number_advice, refuse_derived
from payfm.serving.decision_codec import json_bytes
from payfm.serving.errors import (
    InvalidInput,
    Unauthorized,
    Unavailable,
    backend_errors,
    backend_failure,
    http_status,
    printable,
    shown,
)
from payfm.serving.health import OneAtATime
from payfm.serving.keys import KeyStore
from payfm.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from payfm.serving.metrics import ServiceMetrics
from payfm.serving.openapi_doc import shaped
from payfm.serving.outcome_checks import typed_problem
from payfm.serving.review_routes import add_review_routes
from payfm.serving.scorer import Scorer

log = logging.getLogger("payfm.serving")
SCORE_PATH = "/v1/charges/score"
_OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


def _error(status: int, type_: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": type_, "message": message, "field": field}}, status_code=status, headers=headers
    )


def _json(value: Any) -> bytes:
    return json_bytes(value)


def _not_json(why: str) -> InvalidInput:
    """The 422 of a body that does not parse, the same on every endpoint; ``why`` never quotes the body."""
    return InvalidInput(f"The body is not valid JSON ({why}).")


def _no_body() -> InvalidInput:
    """The 422 of a request without a body, the same on every endpoint."""
    return InvalidInput("The body must be a JSON object. Got none.")


def _why_not_json(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at character {e.pos}"
    if isinstance(e, RecursionError):  # the parser recurses per nesting level
        return "nested too deeply"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, ValueError) and "integer string conversion" in str(e):  # (Python's limit on digits)
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return type(e).__name__


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of a JSON body (``object_pairs_hook``), refused when a key comes twice: the standard library
    keeps the last one, while a proxy or a log in front of the service may read the first (another value
    than the one decided on)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        twice = shown(next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1))
        raise InvalidInput(f"Field {twice!r}: expected once in the body. Got it more than once.", field=twice)
    return obj


def _parse_body(body: bytes) -> Any:
    """The JSON value of a request body, a key given twice refused (:func:`_unique_keys`)."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser goes
        raise _not_json(_why_not_json(e)) from None


def _is_json(content_type: str | None) -> bool:
    """Whether a request with this Content-Type has a JSON body, as FastAPI decides for its endpoints (it
    parses the header with the standard library's e-mail message): ``application/json`` or
    ``application/<anything>+json``, parameters and case aside; none given is not JSON."""
    if content_type == "application/json":  # what nearly every client sends: no parsing
        return True
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    sub = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


def _not_json_type(content_type: str | None) -> InvalidInput:
    """The 422 of a body sent without a JSON Content-Type (`curl -d` sends a form), on every endpoint."""
    got = f"'{printable(shown(content_type))}'" if content_type else "none"
    return InvalidInput(
        "The body must be a JSON object sent with 'Content-Type: application/json' (curl: -H "
        f"'Content-Type: application/json'). Got Content-Type {got}."
    )


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _not_object(value: Any) -> InvalidInput:
    """The 422 of a body that parses to something other than an object: what it is, not what it holds."""
    if isinstance(value, bytes | bytearray):  # FastAPI leaves a body it was not told is JSON unparsed
        return InvalidInput(
            "The body must be a JSON object sent with 'Content-Type: application/json' (curl: -H "
            "'Content-Type: application/json'). Got another content type."
        )
    kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
    return InvalidInput(f"The body must be a JSON object. Got {kind}.")


Authorize = Callable[[str], Awaitable[str | None]]


class ScoreEndpoint:
    """``POST /v1/charges/score``, the hot path, as one coroutine over the raw body: the body is parsed here
    and validated by the scorer (:func:`payfm.serving.charges.normalize_charge`: the event schema's rules,
    422 naming the field) instead of by a pydantic model, the decision is computed on the event loop and only
    the durable commit is awaited (shared with concurrent requests by the decision log's group commit).

    :class:`Guard` answers the route with it directly (no routing, dependency injection or response model:
    a third of the per-request CPU); the FastAPI route calls it too and documents the endpoint (OpenAPI).
    """

    def __init__(self, scorer: Scorer, authorize: Authorize, metrics: ServiceMetrics | None = None) -> None:
        self.scorer, self.authorize, self.metrics = scorer, authorize, metrics

    async def __call__(
        self, body: bytes, authorization: str, content_type: str | None = None, *, key_checked: bool = False
    ) -> tuple[int, bytes, dict[str, str]]:
        """``(status, JSON body, extra headers)``; errors are the API's JSON errors, never a traceback.
        ``key_checked``: the caller (:class:`Guard`) verified the API key already."""
        try:
            if not key_checked:
                await self.authorize(authorization)
            if not body:  # as FastAPI's endpoints answer a request without a body
                raise _no_body()
            if not _is_json(content_type):  # (the Guard refuses it before: this is FastAPI's route)
                raise _not_json_type(content_type)
            charge = _parse_body(body)
            if not isinstance(charge, dict):
                raise _not_object(charge)
            refuse_derived(charge)
            decision = await self.scorer.score_async(charge)
            if self.metrics is not None:
                self.metrics.decided(decision.outcome, decision.risk_level, decision.latency_ms)
            return 200, _json(decision.response()), {}
        except PayfmError as e:
            _count_unavailable(e, self.metrics)
            return _error_parts(e)
        except Exception as e:
            failure = _backend_failed(e, self.metrics, self.scorer.scrub)
            if failure is not None:
                return _error_parts(failure)
            log.exception("unexpected error on /v1/charges/score")
            err = {
                "type": "InternalError",
                "message": "An internal error occurred; it was logged.",
                "field": None,
            }
            return 500, _json({"error": err}), {}


def _warnings(scorer: Scorer, served: dict[str, Any]) -> list[str]:
    """What ``/healthz`` warns of (status still 200) and ``payfm_health_warnings`` counts: the bundle's
    (``served``: its description; lists deleted, a shadow it could not load), a change the server follows
    but cannot serve, and embedder states a Redis restart left stale."""
    warnings = list(served.get("warnings", []))
    if scorer.watcher is not None:
        warnings += [scorer.watcher.problem] if scorer.watcher.problem else []
        warnings += scorer.watcher.restarts.warnings()  # (embedder states a Redis restart left stale)
    return warnings


def _error_parts(e: PayfmError) -> tuple[int, bytes, dict[str, str]]:
    """``(status, JSON body, headers)`` of the API's error of ``e``, for the score endpoint's own answers."""
    status, headers = _status_headers(e)
    err = {"type": type(e).__name__, "message": str(e), "field": getattr(e, "field", None)}
    return status, _json({"error": err}), headers


def _status_headers(e: PayfmError) -> tuple[int, dict[str, str]]:
    """The HTTP status of ``e`` and its headers: the Bearer challenge of a 401, the Retry-After of a 503."""
    status = http_status(e)
    if status == 401:
        return status, {"WWW-Authenticate": "Bearer"}
    return status, ({"Retry-After": "1"} if status == 503 else {})


def _backend_failed(
    e: BaseException, metrics: ServiceMetrics | None, scrub: Callable[[str], str]
) -> Unavailable | None:
    """The 503 of a backend's failure (logged on one line, without a backend URL's password: ``scrub``,
    counted), None for any other error (a bug)."""
    failure = backend_failure(e)
    if failure is not None:
        first_line = scrub((str(e).splitlines() or [""])[0])
        log.error("the %s failed: %s: %s", failure.backend, type(e).__name__, printable(shown(first_line)))
        _count_unavailable(failure, metrics, logged=True)
    return failure


def _count_unavailable(e: PayfmError, metrics: ServiceMetrics | None, logged: bool = False) -> None:
    """Count a 503 Unavailable (a backend's failure, a charge's lock not freed in time, a commit not done in
    time) by its backend, and log it on one line unless ``logged`` (an operator saw 503s and no reason)."""
    if not isinstance(e, Unavailable):
        return
    if not logged:
        log.warning("503 of the %s: %s", e.backend, printable(shown(str(e))))
    if metrics is not None:
        metrics.backend_errors.labels(e.backend).inc()


def _payfm_error(e: PayfmError) -> JSONResponse:
    """The API's JSON error of ``e``, with its status and headers (:func:`_status_headers`)."""
    status, headers = _status_headers(e)
    return _error(status, type(e).__name__, str(e), getattr(e, "field", None), **headers)


class Guard:
    """Load shedding, body size limit, the API key, and card numbers refused unparsed (after the key: a
    request without one costs no scan).

    Two overload signals, either sheds (503 with Retry-After, before anything parses the request): more than
    ``max_in_flight`` requests in the app, or an event-loop queueing delay above ``max_lag_ms`` (a probe
    scheduled with ``call_soon`` as a request ends measures how long the loop takes to reach it: with the CPU
    saturated, requests wait there, not in the app). Shedding costs far less than deciding, so the delay
    falls and the service recovers on its own when the load drops.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int = 64,
        max_body: int = 64 * 1024,
        max_lag_ms: float | None = None,
        body_timeout_s: float = 10.0,
        score: ScoreEndpoint | None = None,
        authorize: Authorize | None = None,
        metrics: ServiceMetrics | None = None,
        access_log: bool = False,
    ) -> None:
        self.app, self.max_in_flight, self.max_body = app, max_in_flight, max_body
        self.body_timeout_s = body_timeout_s  # a body not all there by then: 408
        self.metrics = metrics  # counts every request (None: nothing counted, no access log)
        self.access_log = access_log  # one line per request (logger payfm.access), with metrics
        self.authorize = authorize  # checks the API key of every request to a path not in _OPEN_PATHS
        self.score = score  # answers POST /v1/charges/score without the FastAPI stack
        self.max_lag_s = None if max_lag_ms is None else max_lag_ms / 1000  # None: no delay-based shedding
        self.in_flight = 0
        self.shed = 0
        self.lag_s = 0.0  # the last probe's queueing delay
        self._lag_at = 0.0  # when it was measured (loop time)
        self._probing = False

    def _probe(self, loop: asyncio.AbstractEventLoop, scheduled: float) -> None:
        self.lag_s = loop.time() - scheduled
        self._lag_at = loop.time()
        self._probing = False

    def overloaded(self) -> bool:
        if self.max_lag_s is None:
            return self.in_flight >= self.max_in_flight
        now = asyncio.get_running_loop().time()
        return self.in_flight >= self.max_in_flight or (
            self.lag_s > self.max_lag_s and now - self._lag_at < 1.0  # a stale sample says nothing
        )

    def _schedule_probe(self) -> None:
        """Measure the loop's queueing delay from now: called as a request ends, so that the probe waits for
        the work queued behind it (other requests), not for that request's own decision, which runs in the
        loop (scheduled as a request arrived, a 140 ms decision shed the next request of a lone client)."""
        if self.max_lag_s is not None and not self._probing:
            self._probing = True
            loop = asyncio.get_running_loop()
            loop.call_soon(self._probe, loop, loop.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is None:
            await self._handle(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, sent, key = 0, 0, None

        async def counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            key = await self._handle(scope, receive, counted)
        except asyncio.CancelledError:
            status = status or 499  # the client left before its answer (as nginx logs it)
            raise
        except BaseException:
            status = status or 500  # what uvicorn answers when an error escapes the app
            raise
        finally:
            status = status or 499  # returned without an answer: the client left while it sent its body
            self.metrics.request(scope, status, time.perf_counter() - t0, sent, key, self.access_log)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> str | None:
        """Answer one HTTP request; the name of its API key (None without one).

        The body is read and the key checked before the request counts as in flight: a client that sends
        its body slowly (or never) holds no place of ``max_in_flight`` (64 idle connections without a key
        kept every other request shed), and waits at most ``body_timeout_s`` for it (408)."""
        if scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return None
        # A header sent twice: its first value, as Starlette reads it for the endpoints (a later Content-Type
        # would otherwise decide here what the endpoint then reads otherwise)
        headers = dict(reversed(scope.get("headers") or []))
        body = await self._body(headers, scope, receive, send)
        if body is None:  # answered (too large, too slow) or the client left
            return None
        key = None
        if self.authorize is not None:  # before the scan below: an unauthenticated body costs nothing more
            try:
                key = await self.authorize(headers.get(b"authorization", b"").decode("latin-1"))
            except PayfmError as e:
                await _payfm_error(e)(scope, receive, send)
                return None
        if self.overloaded():
            self.shed += 1
            if self.metrics is not None:
                self.metrics.shed.inc()
            try:
                await _error(
                    503,
                    "Overloaded",
                    "The service is overloaded; retry shortly.",
                    None,
                    **{"Retry-After": "1"},
                )(scope, receive, send)
            finally:
                self._schedule_probe()
            return key
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send, headers, body)
            return key
        finally:
            self.in_flight -= 1
            self._schedule_probe()

    async def _body(
        self, headers: dict[bytes, bytes], scope: Scope, receive: Receive, send: Send
    ) -> bytes | None:
        """The request's body; None when it was answered instead (413 over ``max_body``, 408 not all there
        within ``body_timeout_s``) or the client left."""

        def too_big() -> JSONResponse:  # built only when needed: a response costs ~50 us to render
            return _error(413, "PayloadTooLarge", f"The request body must be at most {self.max_body} bytes.")

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await too_big()(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return None
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await too_big()(scope, receive, send)
                        return None
                    chunks.append(chunk)
                    more = msg.get("more_body", False)
        except TimeoutError:
            await _error(
                408,
                "RequestTimeout",
                f"The request body did not arrive within {self.body_timeout_s:g} s (got {size} bytes).",
            )(scope, receive, send)
            return None
        return b"".join(chunks)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], body: bytes
    ) -> None:
        if body and contains_card_number(body.decode("utf-8", "replace")):
            instead = card_number_advice(scope["path"] == SCORE_PATH)
            await _error(
                422,
                "InvalidInput",
                f"The request holds a full card number, which payfm never accepts ({instead}). The value is "
                "not shown.",
            )(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        if body and not _is_json(content_type):  # every endpoint takes JSON: refused alike, before parsing
            await _payfm_error(_not_json_type(content_type))(scope, receive, send)
            return
        if self.score is not None and scope["path"] == SCORE_PATH and scope["method"] == "POST":
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            checked = self.authorize is not None  # checked above
            status, payload, extra = await self.score(body, authorization, content_type, key_checked=checked)
            out = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            out += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": payload})
            return
        if body:  # the other endpoints' bodies: FastAPI would keep a key's last value, and an endpoint that
            try:  # takes no body would not read one that does not parse
                _parse_body(body)
            except InvalidInput as e:
                await _payfm_error(e)(scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(
    scorer: Scorer,
    keys: KeyStore | None,
    *,
    max_in_flight: int = 64,
    max_body: int = 64 * 1024,
    max_lag_ms: float | None = None,
    access_log: bool = False,
    body_timeout_s: float = 10.0,
) -> Guard:
    """The decision service over ``scorer``: the FastAPI app wrapped in :class:`Guard`.

    ``keys=None`` disables authentication (tests and loopback benchmarks only); ``max_lag_ms`` turns on
    shedding on event-loop queueing delay (``payfm serve`` does, 50 ms by default); ``access_log`` writes a
    line per request (logger ``payfm.access``; ``payfm serve`` does unless ``--no-access-log``);
    ``body_timeout_s``: how long a request's body may take to arrive (then 408)."""
    app = FastAPI(title="payfm decision service", version="1", docs_url=None, redoc_url=None)
    guard: Guard | None = None  # set below: the metrics read its requests in flight and loop delay

    def live() -> dict[str, Any]:
        served = scorer.bundle.describe()
        return {
            "payfm_requests_in_flight": guard.in_flight if guard else 0,
            "payfm_event_loop_lag_seconds": guard.lag_s if guard else 0.0,
            "payfm_events_waiting": scorer.events_waiting(),
            "payfm_health_warnings": len(_warnings(scorer, served)),
            "served": served,
        }

    metrics = ServiceMetrics(live)

    async def check_key(authorization: str) -> str | None:  # async: no thread hop on the hot path
        if keys is None:
            return None
        scheme, _, token = authorization.partition(" ")
        bearer = scheme.lower() == "bearer"
        name = keys.verify(token.strip()) if bearer else None
        if name is None:
            # The holder of the whole key of a revoked one: told so, not which key it was nor when (a key is
            # often revoked because it leaked, and its name is often a person's).
            if bearer and keys.is_revoked(token.strip()):
                raise Unauthorized(
                    "This API key has been revoked: ask for a new one (`payfm serve keys create`)."
                )
            raise Unauthorized("A valid API key is required: send 'Authorization: Bearer <key>'.")
        return name

    async def authorize(request: Request) -> str | None:
        return await check_key(request.headers.get("authorization", ""))

    score_endpoint = ScoreEndpoint(scorer, check_key, metrics)

    def openapi() -> dict[str, Any]:
        # The score endpoint parses its body itself (see below): document the Charge schema for it.
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {})["Charge"] = (
                ChargeIn.model_json_schema(ref_template="#/components/schemas/{model}")
            )
            app.openapi_schema = shaped(spec, _OPEN_PATHS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(PayfmError)
    async def payfm_error(request: Request, e: PayfmError) -> JSONResponse:
        _count_unavailable(e, metrics)
        return _payfm_error(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {}
        where = first.get("loc", ())
        loc = [str(x) for x in where if x not in ("body", "query", "path")]
        field = shown(".".join(loc)) or None  # a field name may come from the client (an extra field)
        msg = str(first.get("msg", "invalid input"))
        if first.get("type") == "extra_forbidden":
            msg = "this field is not part of the schema"
        if first.get("type") == "json_invalid":  # its location is a character offset, not a field
            why = str((first.get("ctx") or {}).get("error", msg))
            return _payfm_error(_not_json(f"{why} at character {loc[-1] if loc else '?'}"))
        if tuple(where) == ("body",):  # the body as a whole: not an object, or none at all
            if first.get("type") == "missing":
                return _payfm_error(_no_body())
            return _payfm_error(_not_object(first.get("input")))
        if (typed := typed_problem(request.url.path, first)) is not None:  # as the score endpoint says it
            return _payfm_error(typed)
        return _error(422, "InvalidInput", field_problem(field, first, msg), field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # unknown paths (404) and wrong methods (405) answer in the service's error format too
        if e.status_code == 400 and e.__cause__ is not None:  # FastAPI's: the body did not parse
            return _payfm_error(_not_json(_why_not_json(e.__cause__)))
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
        return _error(
            e.status_code,
            kind,
            f"{shown(f'{request.method} {request.url.path}')}: {e.detail}.",  # the path may hold anything
            None,
            **(e.headers or {}),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "InternalError", "An internal error occurred; it was logged.")

    async def unavailable(request: Request, e: Exception) -> JSONResponse:
        failure = _backend_failed(e, metrics, scorer.scrub)
        if failure is None:  # a driver's error that is a bug (SQLite's "no such table"): a 500
            return await unexpected(request, e)
        return _payfm_error(failure)

    for kind in backend_errors():  # handled here, not as a 500 (which Starlette re-raises, a traceback)
        app.add_exception_handler(kind, unavailable)

    auth = [Depends(authorize)]

    def health_answer() -> tuple[int, bytes]:
        problems = scorer.health()
        served = scorer.bundle.describe()
        body = {
            "status": "unhealthy" if problems else "ok",
            **({"problems": problems} if problems else {}),
            **served,
            "events_waiting": scorer.events_waiting(),
        }
        if warnings := _warnings(scorer, served):
            body["warnings"] = warnings
        return 503 if problems else 200, _json(body)

    health = OneAtATime(health_answer)  # its own thread, never the pool's (which blocked requests may hold)

    @app.get("/healthz", responses={503: {"description": "the server cannot decide as it should"}})
    async def healthz() -> Response:
        """200 with what is served; 503 naming each problem (the decision log or the shared state not
        answering, a write of the log stalled, the shared state gone), so that a load balancer takes the
        server out."""
        status, body = await health()
        return Response(body, status_code=status, media_type="application/json")

    @app.head("/healthz", include_in_schema=False)  # what some load balancers probe with
    async def healthz_head() -> Response:
        return Response(status_code=(await health())[0])

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus' text format: requests, decisions, outcomes, shed and failed requests, the served
        model; no key needed, as /healthz (see docs/serving.md, "Metrics and access log")."""
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)  # (in memory: on the loop)

    charge_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Charge"}}}

    @app.post(
        SCORE_PATH,
        response_model=DecisionOut,
        openapi_extra={"requestBody": {"required": True, "content": charge_body}},
    )
    async def score(request: Request) -> Response:
        """A decision (Guard answers this route itself with the same ScoreEndpoint)."""
        auth = request.headers.get("authorization", "")
        kind = request.headers.get("content-type")
        status, payload, headers = await score_endpoint(await request.body(), auth, kind)
        return Response(payload, status_code=status, headers=headers, media_type="application/json")

    def _outcome(table: str, body: BaseModel) -> dict[str, Any]:
        answer = scorer.record_outcome(table, body.model_dump())
        metrics.outcome(table, answer)
        return answer

    @app.post("/v1/disputes", response_model=OutcomeOut, dependencies=auth)
    def disputes(body: DisputeIn) -> dict[str, Any]:  # type: ignore[valid-type]
        return _outcome("disputes", body)

    @app.post("/v1/early_fraud_warnings", response_model=OutcomeOut, dependencies=auth)
    def early_fraud_warnings(body: EarlyFraudWarningIn) -> dict[str, Any]:  # type: ignore[valid-type]
        return _outcome("early_fraud_warnings", body)

    @app.post("/v1/refunds", response_model=OutcomeOut, dependencies=auth)
    def refunds(body: RefundIn) -> dict[str, Any]:  # type: ignore[valid-type]
        return _outcome("refunds", body)

    @app.post(  # :path: a charge id may hold "/" (percent-encoded or not)
        "/v1/charges/{charge_id:path}/authorization", response_model=AuthorizationOut, dependencies=auth
    )
    def authorization(charge_id: str, body: AuthorizationIn) -> dict[str, Any]:
        """The processor's answer to a charge decided without it: counted by the declines features."""
        answer = scorer.record_authorization(charge_id, body.outcome, body.decline_code)
        metrics.outcome("authorization", answer)
        return answer

    add_review_routes(app, scorer, metrics, authorize)

    @app.post("/v1/admin/reload", dependencies=auth)
    def reload() -> dict[str, Any]:
        return scorer.reload().describe()

    guard = Guard(
        app,
        max_in_flight=max_in_flight,
        max_body=max_body,
        max_lag_ms=max_lag_ms,
        body_timeout_s=body_timeout_s,
        score=score_endpoint,
        authorize=check_key,
        metrics=metrics,
        access_log=access_log,
    )
    return guard
