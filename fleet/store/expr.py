"""Conditions for conditional writes, as data.

A condition is built once (``F("/spent") + F("/reserved") + est <= F("/ceiling")``) and then
either rendered as a Cosmos ``filter_predicate`` (``to_sql``) or evaluated by the in-memory
twin (``evaluate``) with Cosmos semantics: a missing field is *undefined*, comparisons and
arithmetic involving undefined or mismatched types are undefined, and a write's condition
holds only when it evaluates to exactly ``True``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _path_parts(path: str) -> list[str]:
    if not path.startswith("/") or path == "/":
        raise ValueError(f"field path must look like '/a/b', not {path!r}")
    return path[1:].split("/")


def lookup(doc: Any, path: str) -> Any:
    """The value at a '/a/b' path in a document, or UNDEFINED."""
    node = doc
    for part in _path_parts(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return UNDEFINED
    return node


# SQL precedence, loosest first. Rendering adds parentheses only where precedence needs
# them: the Cosmos emulator's parser backtracks exponentially on nested parentheses.
OR, AND, NOT, CMP, ARITH, ATOM = range(6)


class Expr:
    """Base of condition expressions. Operators build trees; ``==`` is not overloaded."""

    precedence = ATOM

    def to_sql(self) -> str:
        raise NotImplementedError

    def sql_at(self, minimum: int) -> str:
        """This expression's SQL as an operand of something binding at ``minimum``."""
        sql = self.to_sql()
        return f"({sql})" if self.precedence < minimum else sql

    def evaluate(self, doc: Any) -> Any:
        raise NotImplementedError

    def __add__(self, other: Any) -> Expr:
        return Arith("+", self, lit(other))

    def __sub__(self, other: Any) -> Expr:
        return Arith("-", self, lit(other))

    def __lt__(self, other: Any) -> Expr:
        return Cmp("<", self, lit(other))

    def __le__(self, other: Any) -> Expr:
        return Cmp("<=", self, lit(other))

    def __gt__(self, other: Any) -> Expr:
        return Cmp(">", self, lit(other))

    def __ge__(self, other: Any) -> Expr:
        return Cmp(">=", self, lit(other))

    def eq(self, other: Any) -> Expr:
        return Cmp("=", self, lit(other))

    def ne(self, other: Any) -> Expr:
        return Cmp("!=", self, lit(other))


def lit(value: Any) -> Expr:
    return value if isinstance(value, Expr) else Lit(value)


@dataclass(frozen=True, eq=False)
class F(Expr):
    """A document field by '/a/b' path."""

    path: str

    def __post_init__(self) -> None:
        _path_parts(self.path)

    def to_sql(self) -> str:
        return "c" + "".join(f"[{json.dumps(p)}]" for p in _path_parts(self.path))

    def evaluate(self, doc: Any) -> Any:
        return lookup(doc, self.path)


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    value: Any

    def __post_init__(self) -> None:
        if _kind(self.value) == "other":
            raise TypeError(f"conditions compare scalars only, not {type(self.value).__name__}")

    def to_sql(self) -> str:
        return json.dumps(self.value)

    def evaluate(self, doc: Any) -> Any:
        return self.value


@dataclass(frozen=True, eq=False)
class Arith(Expr):
    op: str
    left: Expr
    right: Expr
    precedence = ARITH

    def to_sql(self) -> str:
        # Left-associative: a - (b + c) keeps its parentheses, (a + b) + c loses them.
        return f"{self.left.sql_at(ARITH)} {self.op} {self.right.sql_at(ATOM)}"

    def evaluate(self, doc: Any) -> Any:
        a, b = self.left.evaluate(doc), self.right.evaluate(doc)
        if _kind(a) != "number" or _kind(b) != "number":
            return UNDEFINED
        return a + b if self.op == "+" else a - b


_CMP = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True, eq=False)
class Cmp(Expr):
    op: str
    left: Expr
    right: Expr
    precedence = CMP

    def to_sql(self) -> str:
        return f"{self.left.sql_at(ARITH)} {self.op} {self.right.sql_at(ARITH)}"

    def evaluate(self, doc: Any) -> Any:
        a, b = self.left.evaluate(doc), self.right.evaluate(doc)
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            # Cosmos: equality across types is false; ordering across types is undefined.
            return {"=": False, "!=": True}.get(self.op, UNDEFINED)
        if ka in ("null", "bool") and self.op not in ("=", "!="):
            return UNDEFINED if ka == "null" else _CMP[self.op](a, b)
        return _CMP[self.op](a, b)


@dataclass(frozen=True, eq=False)
class And(Expr):
    parts: tuple[Expr, ...]
    precedence = AND

    def to_sql(self) -> str:
        return " AND ".join(p.sql_at(NOT) for p in self.parts)

    def evaluate(self, doc: Any) -> Any:
        values = [p.evaluate(doc) for p in self.parts]
        if any(v is False for v in values):
            return False
        return True if all(v is True for v in values) else UNDEFINED


@dataclass(frozen=True, eq=False)
class Or(Expr):
    parts: tuple[Expr, ...]
    precedence = OR

    def to_sql(self) -> str:
        return " OR ".join(p.sql_at(AND) for p in self.parts)

    def evaluate(self, doc: Any) -> Any:
        values = [p.evaluate(doc) for p in self.parts]
        if any(v is True for v in values):
            return True
        return False if all(v is False for v in values) else UNDEFINED


@dataclass(frozen=True, eq=False)
class Not(Expr):
    part: Expr
    precedence = NOT

    def to_sql(self) -> str:
        return f"NOT ({self.part.to_sql()})"

    def evaluate(self, doc: Any) -> Any:
        value = self.part.evaluate(doc)
        return (not value) if isinstance(value, bool) else UNDEFINED


@dataclass(frozen=True, eq=False)
class Defined(Expr):
    field: F

    def to_sql(self) -> str:
        return f"IS_DEFINED({self.field.to_sql()})"

    def evaluate(self, doc: Any) -> Any:
        return self.field.evaluate(doc) is not UNDEFINED


def all_of(*parts: Expr) -> Expr:
    return parts[0] if len(parts) == 1 else And(parts)


def any_of(*parts: Expr) -> Expr:
    return parts[0] if len(parts) == 1 else Or(parts)


def holds(condition: Expr, doc: Any) -> bool:
    return condition.evaluate(doc) is True


def filter_predicate(condition: Expr) -> str:
    """The Cosmos ``filter_predicate`` for a patch."""
    return f"FROM c WHERE {condition.to_sql()}"
