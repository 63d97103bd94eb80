"""`payfm review`: work the decision service's review queue from a terminal (list, show, close).

A client of a running `payfm serve` over its HTTP API (docs/serving.md, "Review closures are labels"), not of
the workspace's files: a closure must go through the service, which logs it, appends its label events and
counts them in the online features. The reviewer recorded with each closure is the name of the API key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import click
from rich.table import Table

from payfm.cli.render import console, plural
from payfm.errors import ConfigError, PayfmError, shown_url
from payfm.events.cards import redact_card_numbers
from payfm.events.text import escaped

DEFAULT_URL = "http://127.0.0.1:8000"
REASONS = ("approved", "refunded", "refunded_as_fraud", "disputed")
_RIGHT = ("risk", "amount")  # the list's columns aligned right
TIMEOUT_S = 30.0


class ServiceError(PayfmError):
    """The decision service refused a request, or could not be reached."""


class Service:
    """The review endpoints of the decision service at ``url``, with the API key ``key``."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url.rstrip("/"), key

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON answer of ``method path``; a ServiceError with the service's own message otherwise."""
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ServiceError(self._refusal(e.code, e.read())) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise ServiceError(
                f"Cannot reach the decision service at {shown_url(self.url)}: {why}. Is `payfm serve` "
                "running there? Give its address with --url or PAYFM_URL."
            ) from None

    def _refusal(self, status: int, raw: bytes) -> str:
        try:
            message = str(json.loads(raw)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = raw.decode("utf-8", "replace")[:200] or "(no message)"
        message = redact_card_numbers(escaped(message))
        if status == 401:
            return f"The service refused the API key (401): {message} Set PAYFM_API_KEY or --key-file."
        return f"The service answered {status}: {message}"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"must be the service's address, such as {DEFAULT_URL}. Got {shown_url(value)!r}.",
            param_hint="--url",
        )
    return value


def _key(key_file: str | None) -> str:
    """The API key: the first line of ``key_file``, else PAYFM_API_KEY (never an option's value, which the
    shell's history and `ps` would show)."""
    if key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"Cannot read the API key from --key-file '{escaped(key_file)}': {e}."
            ) from None
        if not key:
            raise ConfigError(f"--key-file '{escaped(key_file)}' is empty: it must hold the API key.")
        return key
    key = os.environ.get("PAYFM_API_KEY", "").strip()
    if not key:
        raise ConfigError(
            "An API key is needed: set PAYFM_API_KEY or give --key-file (create one with "
            "`payfm serve keys create NAME`: the name is recorded as the reviewer of your closures)."
        )
    return key


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
    ctx.obj = {**(ctx.obj or {}), "review_url": _url(url), "key_file": key_file}


def _service(ctx: click.Context) -> Service:
    return Service(ctx.obj["review_url"], _key(ctx.obj["key_file"]))


def _money(charge: Mapping[str, Any]) -> str:
    amount, currency = charge.get("amount"), str(charge.get("currency") or "")
    if not isinstance(amount, int):
        return "-"
    return f"{amount / 100:,.2f} {currency.upper()}"


def _top_reason(item: Mapping[str, Any]) -> str:
    reasons = item.get("reasons") or []
    if not reasons:
        return "-"
    first = reasons[0]
    return str(first.get("text") or first.get("feature") or "-")


def _text(value: object) -> str:
    """A value from the service as one line of the terminal (escaped; card numbers removed)."""
    return redact_card_numbers(escaped("-" if value is None else str(value)))


@review.command("list")
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
@click.option("--all", "every", is_flag=True, help="Every page, not only the first.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line (each review as the API gives it)."
)
@click.pass_context
def review_list(ctx: click.Context, status: str, limit: int, every: bool, as_json: bool) -> None:
    """The review queue, oldest first, one line a review.

    Each line: the charge, when it was opened, its status (a closed one: how), the risk score, the rule that
    sent it, the amount, the merchant and the model's top reason (`show` gives a review in full).

    \b
    Example:
      payfm review list --limit 20
      payfm review list --status all --all --json > reviews.jsonl
    """
    service = _service(ctx)
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = {"status": status, "limit": limit} | ({"starting_after": after} if after else {})
        page = service.request("GET", f"/v1/reviews?{urlencode(query)}")
        items += page["data"]
        after = page.get("next_starting_after")
        if not every or not page.get("has_more") or after is None:
            break
    if as_json:
        for item in items:
            click.echo(json.dumps(item, ensure_ascii=False))
        return
    if not items:
        console.print(f"No {status if status != 'all' else ''} reviews.".replace("  ", " "), highlight=False)
        return
    names = ("charge", "opened (UTC)", "status", "risk", "rule", "amount", "merchant", "top reason")
    rows = []
    for item in items:
        charge = item.get("charge") or {}
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
        rows.append([_text(c) for c in cells])
    table = Table(box=None, header_style="bold", pad_edge=False)
    widths = [max(len(name), *(len(r[i]) for r in rows)) for i, name in enumerate(names)]
    for name, width in zip(names[:-1], widths, strict=False):  # each whole, one line per review
        table.add_column(name, no_wrap=True, min_width=width, justify="right" if name in _RIGHT else "left")
    # The top reason gets what the terminal leaves, cut (`show` gives every reason in full): a column that
    # does not fit would make rich squeeze the others to nothing.
    left = console.width - sum(widths[:-1]) - 2 * (len(names) - 1)
    table.add_column(names[-1], no_wrap=True, overflow="ellipsis", max_width=max(12, left))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    more = "" if every or not page.get("has_more") else "; more: --all, or --limit up to 500"
    console.print(f"{plural(len(items), 'review')} ({status}){more}.", highlight=False)


@review.command("show")
@click.argument("charge_id")
@click.option("--json", "as_json", is_flag=True, help="The review as the API gives it.")
@click.pass_context
def review_show(ctx: click.Context, charge_id: str, as_json: bool) -> None:
    """One review in full.

    Its status, the charge's fields as decided, the model's reasons and the charge's outcomes
    the service has taken (disputes, early fraud warnings, refunds).

    \b
    Example:
      payfm review show ch_123
    """
    item = _service(ctx).request("GET", f"/v1/reviews/{quote(charge_id, safe='')}")
    if as_json:
        click.echo(json.dumps(item, ensure_ascii=False, indent=2))
        return
    out = console.print
    state = (
        "open" if item["status"] == "open" else f"closed as {item.get('reason')} at {item.get('closed_at')}"
    )
    out(f"Review of {_text(item['charge_id'])}: {state}", highlight=False, markup=False)
    out(
        f"  opened {_text(item.get('opened_at'))} by rule {_text(item.get('rule'))}",
        highlight=False,
        markup=False,
    )
    score = item.get("risk_score")
    risk = "no risk score (no model was served)" if score is None else f"risk score {_text(score)}"
    out(f"  {risk} ({_text(item.get('risk_level'))})" if score is not None else f"  {risk}", highlight=False)
    if item.get("note"):
        out(f"  note: {_text(item['note'])}", highlight=False, markup=False)
    out("Charge:", highlight=False)
    charge = item.get("charge") or {}
    for name, value in charge.items():
        if value is not None:
            money = _money({"amount": value, "currency": charge.get("currency")}) if name == "amount" else ""
            money = _money({"amount": value, "currency": "usd"}) if name == "amount_usd" else money
            out(
                f"  {name:<22} {_text(value)}" + (f" ({money})" if money else ""),
                highlight=False,
                markup=False,
            )
    out("Reasons (the model's, largest first):", highlight=False)
    for r in item.get("reasons") or []:
        out(f"  {_text(r.get('text') or r.get('feature'))}", highlight=False, markup=False)
    outcomes = item.get("outcomes") or []
    out("Outcomes:" + ("" if outcomes else " none so far"), highlight=False)
    for o in outcomes:
        said = ", ".join(
            f"{k} {_text(v)}" for k, v in o.items() if k not in ("table", "id") and v is not None
        )
        out(f"  {_text(o.get('table'))} {_text(o.get('id'))}: {said}", highlight=False, markup=False)


@review.command("close")
@click.argument("charge_id")
@click.option("--as", "reason", type=click.Choice(REASONS), required=True, help="What you found.")
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
    body = {"reason": reason, "note": note}
    answer = _service(ctx).request("POST", f"/v1/reviews/{quote(charge_id, safe='')}/close", body)
    label = {1: "fraud (label 1)", 0: "genuine (label 0)", None: "no label"}.get(answer.get("label"), "-")
    said = f"Closed {_text(answer['charge_id'])} as {reason}: {label}"
    outcome = answer.get("outcome")
    if outcome:
        said += f"; recorded {_text(outcome.get('table'))} {_text(outcome.get('id'))}"
        if outcome.get("pending"):
            said += " (pending: the service records it as soon as the charge is free)"
    if answer.get("duplicate"):
        said += " (it was closed so already: nothing new recorded)"
    console.print(said + ".", highlight=False, markup=False)
