"""The subset of the IoT Hub query language the mock answers: `SELECT * FROM devices [WHERE ...]`.

Pure: a query string in, a predicate over twin JSON documents out; standard library only.

Grammar (keywords case-insensitive):
    query      := SELECT * FROM devices [WHERE or_expr]
    or_expr    := and_expr (OR and_expr)*
    and_expr   := not_expr (AND not_expr)*
    not_expr   := NOT not_expr | '(' or_expr ')' | comparison
    comparison := path ('=' | '!=' | '<>' | '<' | '<=' | '>' | '>=') literal
                | path [NOT] IN '(' literal (',' literal)* ')'
    path       := name ('.' name)*          e.g. tags.location.region, properties.reported.fw
    literal    := 'string' | "string" | number | true | false | null

Invariants:
- A comparison on a path the document does not have is false (IoT Hub's "undefined"), for
  `!=` too; `= null` matches only an explicit null.
- Anything outside the grammar raises `RequestRefused(400)`; nothing is evaluated with `eval`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from infra.hub._errors import RequestRefused

__all__ = ["compile_query"]

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*'|\"[^\"]*\")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|[=<>(),*])"
    r"|(?P<name>[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*))"
)


def _bad(message: str) -> RequestRefused:
    return RequestRefused(400, "BadRequest", f"query: {message}")


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _bad(f"unexpected input at {text[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._tokens = tokens
        self._pos = 0

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token and token[0] == "name" and token[1].upper() == word:
            self._pos += 1
            return True
        return False

    def _expect_keyword(self, word: str) -> None:
        if not self._keyword(word):
            raise _bad(f"expected {word}")

    def _op(self, symbol: str) -> bool:
        token = self._peek()
        if token and token[0] == "op" and token[1] == symbol:
            self._pos += 1
            return True
        return False

    def query(self) -> Predicate:
        self._expect_keyword("SELECT")
        if not self._op("*"):
            raise _bad("only SELECT * is supported")
        self._expect_keyword("FROM")
        self._expect_keyword("DEVICES")
        predicate: Predicate = lambda _doc: True  # noqa: E731
        if self._keyword("WHERE"):
            predicate = self._or()
        if self._peek() is not None:
            raise _bad(f"unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return predicate

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._keyword("OR"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else lambda doc: any(t(doc) for t in terms)

    def _and(self) -> Predicate:
        terms = [self._not()]
        while self._keyword("AND"):
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else lambda doc: all(t(doc) for t in terms)

    def _not(self) -> Predicate:
        if self._keyword("NOT"):
            inner = self._not()
            return lambda doc: not inner(doc)
        if self._op("("):
            inner = self._or()
            if not self._op(")"):
                raise _bad("missing ')'")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        token = self._peek()
        if not token or token[0] != "name":
            raise _bad("expected a property path")
        self._pos += 1
        path = token[1].split(".")
        negate = self._keyword("NOT")
        if self._keyword("IN"):
            values = self._list()
            return lambda doc: _in_list(_lookup(doc, path), values, negate)
        if negate:
            raise _bad("NOT must be followed by IN here")
        op = self._peek()
        if not op or op[0] != "op" or op[1] not in _COMPARE:
            raise _bad(f"expected a comparison after {token[1]!r}")
        self._pos += 1
        compare, literal = _COMPARE[op[1]], self._literal()
        return lambda doc: _apply(compare, _lookup(doc, path), literal)

    def _list(self) -> list[Any]:
        if not self._op("("):
            raise _bad("IN needs a parenthesised list")
        values = [self._literal()]
        while self._op(","):
            values.append(self._literal())
        if not self._op(")"):
            raise _bad("missing ')' after the IN list")
        return values

    def _literal(self) -> Any:
        token = self._peek()
        if token is None:
            raise _bad("expected a value")
        self._pos += 1
        kind, text = token
        if kind == "str":
            return text[1:-1].replace("''", "'") if text[0] == "'" else text[1:-1]
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "name" and text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text.lower()]
        raise _bad(f"{text!r} is not a value")


def _lookup(doc: dict[str, Any], path: list[str]) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict):
            return _MISSING
        match = next((k for k in node if k.lower() == part.lower()), None)
        if match is None:
            return _MISSING
        node = node[match]
    return node


def _same_kind(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numeric) and isinstance(b, numeric)) or type(a) is type(b)


def _apply(compare: Callable[[Any, Any], bool], value: Any, literal: Any) -> bool:
    if value is _MISSING:
        return False
    if compare in (_EQ, _NE):
        return compare(value, literal) if _same_kind(value, literal) else compare is _NE
    return _same_kind(value, literal) and value is not None and compare(value, literal)


def _in_list(value: Any, values: list[Any], negate: bool) -> bool:
    if value is _MISSING:
        return False
    return any(_same_kind(value, v) and value == v for v in values) != negate


def _EQ(a: Any, b: Any) -> bool:
    return bool(a == b)


def _NE(a: Any, b: Any) -> bool:
    return bool(a != b)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": _EQ,
    "!=": _NE,
    "<>": _NE,
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def compile_query(text: str) -> Predicate:
    """Compile a query into a predicate over REST twin documents."""
    if len(text) > 8192:
        raise _bad("query is longer than 8 KB")
    return _Parser(_tokenize(text)).query()
