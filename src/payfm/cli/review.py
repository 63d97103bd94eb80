"""`payfm review`: work the decision service's review queue from a terminal (list, show, close).

A client of a running `payfm serve` over its HTTP API (docs/serving.md, "Review closures are labels"), not of
the workspace's files: a closure must go through the service, which logs it, appends its label events and
counts them in the online features. The reviewer recorded with each closure is the name of the API key.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import click
from rich.table import Table
from rich.text import Text

from payfm.cli.render import console, plural
from payfm.errors import ConfigError, PayfmError, shown_url
from payfm.events.cards import contains_card_number, redact_card_numbers
from payfm.events.schema import REVIEW_CLOSURES
from payfm.events.text import escaped

DEFAULT_URL = "http://127.0.0.1:8000"
_LABELS = {1: "fraud (label 1)", 0: "genuine (label 0)", None: "no label"}
# the outcome a closure implies, by reason, and the word for an outcome's table
_IMPLIED = {"refunded_as_fraud": "refund", "disputed": "dispute", "refunds": "refund", "disputes": "dispute"}
_RIGHT = ("risk", "amount")  # the list's columns aligned right
_DROPPED_FIRST = ("top reason", "merchant", "opened (UTC)", "rule", "risk")  # on a narrow terminal
TIMEOUT_S = 30.0
_KEYLIKE = re.compile(r"pfm_[0-9a-f]{8}_[A-Za-z0-9_-]+")  # as `payfm serve keys create` prints one


class ServiceError(PayfmError):
    """The decision service refused a request, or could not be reached."""


class Service:
    """The review endpoints of the decision service at ``url``, with the API key ``key``."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url.rstrip("/"), key

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON answer of ``method path``; a ServiceError with the service's own message otherwise."""
        import http.client
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _opener().open(req, timeout=TIMEOUT_S) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise ServiceError(self._refusal(e.code, e.read())) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", e)
            if method == "POST" and (
                isinstance(reason, TimeoutError) or not isinstance(e, urllib.error.URLError)
            ):
                # sent, and no answer (a timeout, a connection lost): it may have been recorded
                raise ServiceError(
                    f"No answer from the decision service at {self.where} ({self._hidden(str(reason))}): the "
                    "closure may be recorded or not. Run the same command again: a retry with the same --as "
                    "and --note is answered as the first."
                ) from None
            why = self._hidden(str(reason) or type(e).__name__)
            raise ServiceError(
                f"Cannot reach the decision service at {self.where}: {why}. Is `payfm serve` running there? "
                "Give its address with --url or PAYFM_URL."
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise self.not_the_api("JSON") from None

    def not_the_api(self, what: str) -> ServiceError:
        """The error for an answer that is not the API's (another server at the address, or none)."""
        return ServiceError(f"The service at {self.where} did not answer with {what}: is it `payfm serve`?")

    @property
    def where(self) -> str:
        """The service's address as a message shows it (no password, no API key)."""
        return self._hidden(shown_url(self.url))

    def _hidden(self, text: str) -> str:
        """``text`` as a message shows it: escaped, no card number, never the API key (nor anything shaped
        like a payfm key, ``pfm_<id>_<secret>``)."""
        return redact_card_numbers(
            escaped(_KEYLIKE.sub("<an API key>", text.replace(self.key, "<the API key>")))
        )

    def _refusal(self, status: int, raw: bytes) -> str:
        try:
            message = str(json.loads(raw)["error"]["message"])
        except (ValueError, KeyError, TypeError):  # not the API's error: another server at that address
            if 300 <= status < 400:
                return (
                    f"The service answered {status} (a redirect, not followed: give its address with --url)."
                )
            return (
                f"The service at {self.where} answered {status}, not as `payfm serve` does: is --url right?"
            )
        message = self._hidden(message)
        if status == 401:
            return f"The service refused the API key (401): {message} Set PAYFM_API_KEY or --key-file."
        return f"The service answered {status}: {message}"


@functools.cache
def _opener() -> Any:
    """A urllib opener that follows no redirect: urllib's would send the key on to whatever host a redirect
    names. (urllib is imported here, by the commands that use it, not by every command's start.)"""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx is then an HTTPError

    return urllib.request.build_opener(NoRedirect)


def service_url(value: str, key: str | None, option: str = "--url") -> str:
    """``value`` if it is a service's address (http or https, a host, a port if any, no user, query or
    fragment; HOST:PORT alone means http://, as `payfm replay --http` takes it); a usage error naming
    ``option`` otherwise, which never shows ``key`` (a key pasted into PAYFM_URL)."""
    if "://" not in value and value.strip():
        value = f"http://{value}"
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        port_ok = False
        parts = urlsplit("")
    fine = (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port_ok
        and "@" not in parts.netloc
        and not (parts.query or parts.fragment)
        and value.isprintable()
        and " " not in value
        and not (key and key in unquote(value))
        and not _KEYLIKE.search(unquote(value))
    )
    if not fine:
        said = shown_url(unquote(value))
        said = _KEYLIKE.sub("<an API key>", said.replace(key, "<the API key>") if key else said)
        raise click.BadParameter(
            f"must be the service's address, such as {DEFAULT_URL} (no user, query, space or key). Got "
            f"{said!r}.",
            param_hint=option,
        )
    return value


def api_key(key_file: str | None) -> str:
    """The API key: the first non-blank line of ``key_file``, else PAYFM_API_KEY (never an option's value,
    which the shell's history and `ps` would show). Never quoted in a message."""
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"Cannot read the API key from --key-file '{escaped(key_file)}': {e}."
            ) from None
        key = next((line.strip() for line in lines if line.strip()), "")
        if not key:
            raise ConfigError(f"--key-file '{escaped(key_file)}' is empty: it must hold the API key.")
        where = f"--key-file '{escaped(key_file)}'"
    else:
        key = os.environ.get("PAYFM_API_KEY", "").strip()
        if not key:
            raise ConfigError(
                "An API key is needed: set PAYFM_API_KEY or give --key-file (create one with "
                "`payfm serve keys create NAME`: the name is recorded as the reviewer of your closures)."
            )
        where = "PAYFM_API_KEY"
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise ConfigError(
            f"The API key in {where} must be one word of printable ASCII characters, as `payfm serve keys "
            "create` prints it. Got other characters (the key is not shown)."
        )
    return key


def _arg(value: str, name: str) -> str:
    """A command-line text that is valid Unicode (an argument of bytes that are not UTF-8 is not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{name} is not valid UTF-8 text. Got bytes that are not.") from None
    return value


def _charge_id(value: str) -> str:
    """CHARGE_ID as given, without the spaces a copy and paste adds (no charge id starts or ends with one)."""
    cid = _arg(value, "CHARGE_ID").strip()
    if not cid:
        raise ConfigError(
            "CHARGE_ID is empty: give the charge id of a review (`payfm review list` shows them)."
        )
    return cid


@click.group()
@click.option(
    "--url",
    envvar="PAYFM_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The decision service (or set PAYFM_URL).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    help="A file holding your API key (default: the environment variable PAYFM_API_KEY).",
)
@click.pass_context
def review(ctx: click.Context, url: str, key_file: str | None) -> None:
    """Work the review queue of a running decision service (`payfm serve`).

    The charges that rules sent to manual review wait in the queue, oldest first. Close each with what you
    found: approved (genuine), refunded (refunded, not fraud), refunded_as_fraud or disputed (fraud: the
    closure becomes a fraud label, and the service records the refund or dispute it implies). You are
    recorded as the reviewer: the name of your API key.

    \b
    Example:
      export PAYFM_API_KEY=...                        # from: payfm serve keys create alice
      payfm review list                               # the open queue, oldest first
      payfm review show ch_123                        # one charge: fields, reasons, outcomes so far
      payfm review close ch_123 --as refunded_as_fraud --note "cardholder confirmed"
      payfm review list --status closed --json        # what was closed, as JSON
    """
    ctx.obj = {**(ctx.obj or {}), "review_url": url, "key_file": key_file}  # (checked with the key, below)


def _total(service: Service, status: str, rule: str | None) -> int | None:
    """How many reviews of ``status`` the queue holds (sent by ``rule`` only, if given)."""
    query = {"status": status, "limit": 1} | ({"rule": rule} if rule else {})
    page = service.request("GET", f"/v1/reviews?{urlencode(query)}")
    total = page.get("total") if isinstance(page, dict) else None
    return total if isinstance(total, int) else None


def _service(ctx: click.Context) -> Service:
    key = api_key(ctx.obj["key_file"])
    return Service(service_url(ctx.obj["review_url"], key), key)


def _connection(f: Any) -> Any:
    """--url and --key-file after the subcommand too (`payfm review list --key-file bob.key`)."""

    def keep(name: str) -> Any:
        def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
            if value is not None:
                ctx.obj[name] = value

        return callback

    f = click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=keep("key_file"),
        help="A file holding your API key (as before the subcommand).",
    )(f)
    return click.option(
        "--url",
        expose_value=False,
        callback=keep("review_url"),
        help="The decision service (as before the subcommand).",
    )(f)


def _money(charge: Mapping[str, Any]) -> str:
    amount, currency = charge.get("amount"), str(charge.get("currency") or "")
    if not isinstance(amount, int):
        return "-"
    return f"{amount / 100:,.2f} {_text(currency.upper())}"


def _top_reason(item: Mapping[str, Any]) -> str:
    reasons = _dicts(item.get("reasons"))
    return str(reasons[0].get("text") or reasons[0].get("feature") or "-") if reasons else "-"


def _review(service: Service, item: object) -> dict[str, Any]:
    """``item`` if it is a review as the API gives one (a charge id and a status); a ServiceError if not."""
    if (
        isinstance(item, dict)
        and isinstance(item.get("charge_id"), str)
        and isinstance(item.get("status"), str)
    ):
        return item
    raise service.not_the_api("a review")


def _dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a list the service gave (its reasons, its outcomes); nothing else."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: object) -> str:
    """A value from the service as one line of the terminal (escaped; card numbers removed)."""
    return redact_card_numbers(escaped("-" if value is None else str(value)))


def _read_value(value: object) -> str:
    """A value a rule read, as rules write one: a text quoted, a number as it is, ``missing`` for none."""
    if value is None:
        return "missing"
    return _text(repr(value)) if isinstance(value, str) else _text(value)


@review.command("list")
@_connection
@click.option(
    "--status",
    type=click.Choice(["open", "closed", "all"]),
    default="open",
    show_default=True,
    help="Which reviews.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Reviews per page (at most 500).",
)
@click.option("--rule", help="Only the reviews this rule sent (its name, as `payfm rules show` has it).")
@click.option(
    "--min-risk",
    type=click.IntRange(0, 100),
    help="Only the reviews of charges scored at least this (0-100).",
)
@click.option("--all", "every", is_flag=True, help="Every page, not only the first.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line (each review as the API gives it)."
)
@click.pass_context
def review_list(
    ctx: click.Context,
    status: str,
    limit: int,
    rule: str | None,
    min_risk: int | None,
    every: bool,
    as_json: bool,
) -> None:
    """The review queue, oldest first, one line a review.

    Each line: the charge, when it was opened, its status (a closed one: how), the risk score, the rule that
    sent it, the amount, the merchant and the model's top reason (`show` gives a review in full).

    \b
    Example:
      payfm review list --limit 20
      payfm review list --rule new_card_large --min-risk 50     # one rule's, the riskiest
      payfm review list --status all --all --json > reviews.jsonl
    """
    service = _service(ctx)
    items: list[dict[str, Any]] = []
    after: str | None = None
    seen: set[str] = set()
    while True:
        which = {"rule": _arg(rule, "--rule") if rule else None, "min_risk_score": min_risk}
        query = {"status": status, "limit": limit} | {k: v for k, v in which.items() if v is not None}
        query |= {"starting_after": after} if after else {}
        page = service.request("GET", f"/v1/reviews?{urlencode(query)}")
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise service.not_the_api("a page of reviews")
        items += [_review(service, item) for item in data]
        after = page.get("next_starting_after")
        if not every or not page.get("has_more") or not isinstance(after, str):
            break
        if after in seen or not data:  # a cursor that does not move would page for ever
            raise service.not_the_api("pages that move on (the same page came twice)")
        seen.add(after)
    if as_json:
        for item in items:
            click.echo(json.dumps(item, ensure_ascii=False))
        return
    if not items:
        kept = f" sent by rule '{_text(rule)}'" if rule else ""
        kept += f" scored {min_risk} or more" if min_risk is not None else ""
        said = f"No {status if status != 'all' else ''} reviews{kept}.".replace("  ", " ")
        if rule and (min_risk is None or _total(service, status, rule) == 0):
            # no review of this rule at all (a misspelt name reads as an empty queue): say what the queue
            # holds without it
            total = _total(service, status, None)
            if total:
                said += (
                    f" The queue holds {total:,} {status if status != 'all' else ''} reviews of other rules: "
                    "`payfm review list` without --rule lists them with their rules' names."
                ).replace("  ", " ")
        console.print(said, highlight=False, markup=False, soft_wrap=True)
        return
    names = ("charge", "opened (UTC)", "status", "risk", "rule", "amount", "merchant", "top reason")
    rows = []
    for item in items:
        charge = item["charge"] if isinstance(item.get("charge"), dict) else {}
        score = item.get("risk_score")  # (none when no model is served)
        risk = "-" if score is None else f"{score} {item.get('risk_level') or ''}".strip()
        state = item["status"] if item["status"] == "open" else item.get("reason")  # (closed: how)
        cells = (
            item["charge_id"],
            str(item.get("opened_at") or "-")[5:16].replace("T", " "),  # (month-day hour:minute)
            state,
            risk,
            item.get("rule"),
            _money(charge),
            charge.get("merchant_id"),
            _top_reason(item),
        )
        rows.append([_text(c) for c in cells])  # (plain text, never markup: ids may hold [ and ])
    widths = {name: max(len(name), *(len(r[i]) for r in rows)) for i, name in enumerate(names)}
    # Every column whole, one line per review; on a narrow terminal, columns are left out whole (said below)
    # rather than cut: rich would squeeze them, down to an amount of "1,50".
    columns = list(names)

    def width(cols: list[str]) -> int:
        return sum(widths[n] if n != names[-1] else 12 for n in cols) + 2 * (len(cols) - 1)

    while len(columns) > 3 and width(columns) > console.width:
        columns.remove(next(n for n in _DROPPED_FIRST if n in columns))
    if width(columns) > console.width:  # not even charge, status and amount: a line each, wrapped whole
        for row in rows:
            console.print(Text("  ".join(row[names.index(n)] for n in columns)), soft_wrap=True)
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in columns:
            if name == names[-1]:  # the top reason gets what the terminal leaves, cut (`show` gives it whole)
                left = console.width - sum(widths[n] for n in columns if n != name) - 2 * (len(columns) - 1)
                table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=max(12, left))
            else:
                right = name in _RIGHT
                table.add_column(
                    name, no_wrap=True, min_width=widths[name], justify="right" if right else "left"
                )
        for row in rows:
            table.add_row(*(Text(c) for i, c in enumerate(row) if names[i] in columns))
        console.print(table)
    if len(columns) < len(names):
        gone = ", ".join(n for n in names if n not in columns)
        console.print(f"(a narrow terminal: {gone} left out; `show` or --json give them)", highlight=False)
    more = "" if every or not page.get("has_more") else "; more: --all, or --limit up to 500"
    total = page.get("total")  # (the queue's length with these filters; a service before it: none)
    of = f" of {total:,}" if isinstance(total, int) and total != len(items) else ""
    console.print(f"{plural(len(items), 'review')}{of} ({status}){more}.", highlight=False)


@review.command("show")
@_connection
@click.argument("charge_id")
@click.option("--json", "as_json", is_flag=True, help="The review as the API gives it.")
@click.pass_context
def review_show(ctx: click.Context, charge_id: str, as_json: bool) -> None:
    """One review in full.

    Its status (a closed one: how, when, by whom, its label), the rule that sent it (as its ruleset
    version wrote it) and the values that rule read, the charge's fields as decided, the model's reasons
    and the charge's disputes, early fraud warnings and refunds: those the service took, and those only the
    event log holds (imported).

    \b
    Example:
      payfm review show ch_123
    """
    service = _service(ctx)
    path = f"/v1/reviews/{quote(_charge_id(charge_id), safe='')}"
    item = _review(service, service.request("GET", path))
    if as_json:
        click.echo(json.dumps(item, ensure_ascii=False, indent=2))
        return
    out = console.print
    by = f" by {_text(item['reviewer'])}" if item.get("reviewer") else ""
    label = _LABELS.get(item["label"], "-") if isinstance(item.get("label"), int | None) else "-"
    closed = f"closed as {_text(item.get('reason'))} at {_text(item.get('closed_at'))}{by}: {label}"
    state = "open" if item["status"] == "open" else closed
    out(f"Review of {_text(item['charge_id'])}: {state}", highlight=False, markup=False)
    out(
        f"  opened {_text(item.get('opened_at'))} by rule {_text(item.get('rule'))}",
        highlight=False,
        markup=False,
    )
    detail = item.get("rule_detail")
    if isinstance(detail, dict) and isinstance(detail.get("values"), dict):
        out(
            f"  rule (ruleset v{_text(detail.get('ruleset_version'))}): {_text(detail.get('condition'))}",
            highlight=False,
            markup=False,
        )
        read = ", ".join(f"{_text(k)} = {_read_value(v)}" for k, v in detail["values"].items())
        out(f"  it read: {read}", highlight=False, markup=False)
    score = item.get("risk_score")
    risk = "no risk score (no model was served)" if score is None else f"risk score {_text(score)}"
    level = f" ({_text(item.get('risk_level'))})" if score is not None else ""
    out(f"  {risk}{level}", highlight=False, markup=False)
    if item.get("note"):
        out(f"  note: {_text(item['note'])}", highlight=False, markup=False)
    out("Charge:", highlight=False)
    charge: dict[str, Any] = item["charge"] if isinstance(item.get("charge"), dict) else {}
    for name, value in charge.items():
        if value is not None:
            money = _money({"amount": value, "currency": charge.get("currency")}) if name == "amount" else ""
            money = _money({"amount": value, "currency": "usd"}) if name == "amount_usd" else money
            out(
                f"  {_text(name):<22} {_text(value)}" + (f" ({money})" if money else ""),
                highlight=False,
                markup=False,
            )
    reasons = _dicts(item.get("reasons"))
    out("Reasons (the model's, largest first):" + ("" if reasons else " none"), highlight=False)
    for r in reasons:
        out(f"  {_text(r.get('text') or r.get('feature'))}", highlight=False, markup=False)
    outcomes = _dicts(item.get("outcomes"))
    out("Outcomes:" + ("" if outcomes else " none so far"), highlight=False)
    for o in outcomes:
        paid = _money(o) if isinstance(o.get("amount"), int) else None
        said = ", ".join(
            f"{_text(k)} {paid if k == 'amount' and paid else _text(v)}"
            for k, v in o.items()
            if k not in ("table", "id", "imported", "currency" if paid else "") and v is not None
        ) + (" (imported: in the event log, not sent to the service)" if o.get("imported") else "")
        out(f"  {_text(o.get('table'))} {_text(o.get('id'))}: {said}", highlight=False, markup=False)


@review.command("close")
@_connection
@click.argument("charge_id")
@click.option("--as", "reason", type=click.Choice(REVIEW_CLOSURES), required=True, help="What you found.")
@click.option("--note", default=None, help="Why, for the record (at most 2,000 characters; no card numbers).")
@click.pass_context
def review_close(ctx: click.Context, charge_id: str, reason: str, note: str | None) -> None:
    """Close the review of CHARGE_ID with what you found (a label).

    approved: genuine (label 0); refunded: refunded, not fraud (no label); refunded_as_fraud, disputed:
    fraud (label 1; the service records the fraudulent refund or dispute it implies, which the online
    features count). Sent again the same way it is a retry, answered as the first; any other second closure
    is refused, saying how it was closed.

    \b
    Example:
      payfm review close ch_123 --as approved --note "known customer, new phone"
    """
    if note is not None and contains_card_number(
        _arg(note, "--note"), free_text=True
    ):  # refused by the service too: not sent
        raise ConfigError(
            "--note holds a full card number: remove it (the last 4 digits are fine). Nothing was sent."
        )
    body = {"reason": reason, "note": note}
    service = _service(ctx)
    path = f"/v1/reviews/{quote(_charge_id(charge_id), safe='')}/close"
    answer = service.request("POST", path, body)
    if not isinstance(answer, dict) or not isinstance(answer.get("charge_id"), str):
        raise service.not_the_api("a closed review")
    label = _LABELS.get(answer["label"], "-") if isinstance(answer.get("label"), int | None) else "-"
    said = f"Closed {_text(answer['charge_id'])} as {reason}: {label}"
    outcome = answer.get("outcome")
    implied = _IMPLIED.get(reason)
    if isinstance(outcome, dict):
        kind = _IMPLIED.get(str(outcome.get("table")), str(outcome.get("table")))
        said += f"; recorded {_text(kind)} {_text(outcome.get('id'))}"
        if outcome.get("pending"):
            said += " (pending: the service records it as soon as the charge is free)"
    elif implied is not None:  # (documented: docs/serving.md, "Review closures are labels")
        said += (
            f"; no {implied} in this answer: the charge moved no money (declined or blocked), has a "
            f"fraudulent {implied} already, or the first closure's is still being recorded"
        )
    if answer.get("duplicate"):
        said += " (it was closed so already: nothing new recorded)"
    console.print(said + ".", highlight=False, markup=False)
