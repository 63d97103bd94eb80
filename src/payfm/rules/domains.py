"""The fragments of string tests on e-mail domains, in the form charges hold domains.

Charges and list entries hold an e-mail domain in one canonical spelling (lower case, internationalized
labels in their Unicode form through IDNA 2003: :func:`payfm.events.schema.canonical_domain`). A fragment
that ``starts_with``, ``ends_with`` or ``contains`` compares is brought to that spelling label by label, so
``'.XN--P1AI'``, ``'.РФ'`` and fullwidth ``'．рф'`` all test ``'.рф'``, and ``'ＥＶＩＬ.com'`` tests
``'evil.com'``. Both engines compare the canonical fragment (:func:`payfm.rules.compiler.canonical_literals`).

A label between two dots, or at an edge of the fragment that is an edge of the domain (the start of a
``starts_with``, the end of an ``ends_with``), is whole: :func:`~payfm.events.schema.canonical_domain`
canonicalizes it. A label at another edge may be part of a longer label (``ends_with 'cher.de'`` matches
``bücher.de``): it gets IDNA's per-character mapping (nameprep: case folding and NFKC), which does not need
the whole label. What cannot be compared meaningfully is refused (:class:`FragmentError`): an ``xn--`` label
that may be cut (punycode encodes a whole label, so part of one says nothing about the Unicode text a charge
holds), characters no domain holds (``@``, spaces, punctuation), an empty label (``..``), a dot where a domain
never has one (``starts_with '.x'``).

Example:
    >>> canonical_fragment("ends_with", ".XN--BCHER-KVA.de"), canonical_fragment("contains", "ＭＡＩＬ")
    ('.bücher.de', 'mail')
"""

from __future__ import annotations

import stringprep
import unicodedata

from payfm.events.schema import RULES, DomainError, canonical_domain

# The charge fields holding domains (e-mail domains): a string test's fragment on one is canonicalized here.
DOMAIN_FIELDS = frozenset(
    name for name, rule in RULES["charges"].items() if rule.canonical is canonical_domain
)
# Full stops of other scripts that IDNA (RFC 3490, 3.1) reads as the label separator, as charges' domains do.
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class FragmentError(ValueError):
    """A fragment no canonical domain can hold (``reason``), with ``hint``: what to write instead."""

    def __init__(self, reason: str, hint: str = "") -> None:
        self.reason, self.hint = reason, hint
        super().__init__(reason + hint)


def _label_char(c: str) -> bool:
    # The characters of a domain label, as the event schema's canonical_domain accepts them: letters (any
    # script), digits, hyphens, underscores and combining marks.
    return c.isalnum() or c in "-_" or unicodedata.category(c).startswith("M")


def _mapped(label: str) -> str:
    """IDNA 2003's mapping of part of a label (RFC 3491: table B.1 removed, B.2 case folding, then NFKC),
    without the checks that need the whole label (its bidirectional text rules)."""
    if label.isascii():
        return label.lower()
    folded = "".join(stringprep.map_table_b2(c) for c in label if not stringprep.in_table_b1(c))
    return unicodedata.normalize("NFKC", folded)


def _cut(label: str) -> str:
    """A label that may be part of a longer one, mapped; refused if it starts as an xn-- label does (charges
    hold such a label decoded: ``'xn--bcher-kva'`` meant ``'bücher'``) or holds a character no domain label
    holds. Inside a label, ``xn--`` is plain text (``'axn--b'``), compared as written."""
    mapped = _mapped(label)
    if mapped.startswith("xn--"):
        try:
            unicode_label = canonical_domain(mapped)
        except DomainError:
            unicode_label = mapped
        spelled = f" ({unicode_label!r})" if unicode_label != mapped else ""
        raise FragmentError(
            f"its label {mapped[:40]!r} may be part of a longer label, and an xn-- (ASCII) label is only "
            "compared whole: charges hold internationalized labels in their Unicode form.",
            f" Write the label in Unicode{spelled}, or bound it with a dot on its open side (ends_with "
            "'.xn--p1ai' tests the whole label 'рф').",
        )
    if not all(map(_label_char, mapped)):
        raise FragmentError(
            f"{label[:40]!r} is not part of a domain label (letters, digits, hyphens and underscores)."
        )
    return mapped


def canonical_fragment(op: str, text: str) -> str:
    """``text``, the fragment of ``:email_domain: <op> text`` (op: starts_with, ends_with or contains), in the
    canonical spelling of domains; a :class:`FragmentError` when no domain can hold it (see the module).

    >>> canonical_fragment("starts_with", "Mail."), canonical_fragment("ends_with", "evil.com.")
    ('mail.', 'evil.com')
    """
    if not text:
        return text
    if "@" in text:  # part of an e-mail address: personal data, not quoted
        raise FragmentError(
            "a domain never holds '@': :email_domain: is the part of an e-mail address after it."
        )
    if any(c.isspace() for c in text):
        raise FragmentError("a domain never holds a space.")
    fragment = text.translate(_IDNA_DOTS)
    if op == "ends_with" and fragment.endswith(".") and fragment != ".":
        fragment = fragment[:-1]  # a fully qualified name's final dot, which canonical domains drop
    labels = fragment.split(".")
    cut_start = op in ("ends_with", "contains")  # the first label may be the end of a longer one
    cut_end = op in ("starts_with", "contains")  # the last label may be the start of a longer one
    out = list(labels)
    for i, label in enumerate(labels):
        first, last = i == 0, i == len(labels) - 1
        if not label:
            if (first and cut_start) or (last and cut_end):
                continue  # a dot at an edge: the fragment starts or ends at a label boundary
            where = (
                "starts with a dot" if first else "ends with a dot" if last else "has an empty label ('..')"
            )
            raise FragmentError(f"a canonical domain never {where}.")
        if (first and cut_start) or (last and cut_end):
            out[i] = _cut(label)
            continue
        try:
            out[i] = canonical_domain(label)
        except DomainError:
            raise FragmentError(
                f"{label[:40]!r} is not a domain label (1 to 63 letters, digits, hyphens or underscores; an "
                "xn-- label must be valid IDNA)."
            ) from None
    return ".".join(out)
