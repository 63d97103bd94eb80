"""The YAML side of a mapping file: PyYAML's safe loader with a mapping's rules (:class:`MappingLoader`), and
its errors on one line without the file's text (:func:`yaml_problem`)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from payfm.events.cards import redact_card_numbers


class MappingLoader(yaml.SafeLoader):
    """PyYAML's safe loader, for mappings: a number written with a leading zero is the text written (a code
    of an export: ``map: {00: authorized}`` matches the text '00', and ``0742`` the MCC '0742', where YAML
    1.1 reads 0 and the octal number 482), and a key given twice in one mapping is an error (YAML keeps the
    last one, silently: ``007`` and ``7`` were one key)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`, merged by the base class
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "in a mapping",
                    node.start_mark,
                    f"the key {key!r} is given twice (first on line {first.start_mark.line + 1}): once each",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# Integers as YAML 1.1 reads them, less its octal form (a leading 0 then digits): those stay text.
MappingLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
MappingLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+
        |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""",
        re.X,
    ),
    list("-+0123456789"),
)


def yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """PyYAML's error on one line: the problem, its line and column (1-based), and what it was parsing.

    PyYAML's own text spans five lines and quotes the lines of the file around the problem, which may hold a
    card number; its problem and context quote only a character, an alias or a tag (card numbers removed).

    >>> try:
    ...     yaml.safe_load("a: b: c")
    ... except yaml.YAMLError as e:
    ...     print(yaml_problem(e, "a: b: c"))
    a syntax error at line 1, column 5: mapping values are not allowed here
    """

    def at(mark: yaml.Mark | None) -> str:
        return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"

    if isinstance(e, yaml.reader.ReaderError):  # a character YAML refuses (NUL, other control characters)
        before = text[: e.position]
        line, column = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        what = f"character #x{e.character:04x}" if isinstance(e.character, int) else "a byte"
        return f"a syntax error at line {line}, column {column}: unacceptable {what} ({e.reason})"
    if not isinstance(e, yaml.MarkedYAMLError):
        return f"a syntax error ({type(e).__name__})"
    problem = " ".join(str(e.problem or e.context or "").split()) or type(e).__name__
    said = f"a syntax error{at(e.problem_mark)}: {problem}"
    if e.context and e.problem:
        started = at(e.context_mark) if at(e.context_mark) != at(e.problem_mark) else ""
        said += f" ({' '.join(str(e.context).split())}{started})"
    return redact_card_numbers(said)
