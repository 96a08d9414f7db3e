"""``where`` filters: a JSON filter on entry values compiled to a SQL condition with bound parameters.

Called by the Kv store (list, count, paginate, delete, search). The compiled SQL text is built
only from this module's constants: field paths, operands and even array lengths travel as bound
parameters, so no client value ever reaches the SQL text. Field paths are also validated here
(a malformed JSON path makes the engine fail the statement), and filters are bounded in depth
and size: every field condition and every empty filter ``{}`` counts toward
:data:`MAX_CONDITIONS`, and conditions are joined as balanced trees, since the engine refuses an
expression more than 100 deep and ``a AND b AND c ...`` parses one level deeper per term.

A filter maps dot paths (``"profile.city"``, ``"tags[0]"``) to an operand (shorthand for
``$eq``) or an object of operators, ANDed; ``$and``/``$or`` take lists of filters and ``$not``
one filter::

    {"city": {"$eqi": "lisbon"}, "age": {"$gte": 18}, "$or": [{"vip": true}, {"score": {"$gt": 90}}]}

Operators: ``$eq $ne $gt $gte $lt $lte $between $in $nin $contains $notContains $startsWith
$endsWith``, the case-insensitive ``$eqi $nei $containsi $notContainsi $startsWithi
$endsWithi`` (ASCII case folding, as the engine's ``lower()``), and ``$null $empty $notEmpty``
(``true``/``false``). Comparisons are typed: a number operand matches only numbers, a string
only strings, ``true``/``false`` only booleans, ``null`` a missing or null field. An operand may
be ``{"$now": true, "$offset"?: ms}`` (epoch ms at query time) or a bigint
``{"__type": "bigint", "value": "5"}``. ``$contains`` tests a substring of a string field or an
element of an array field. Every condition is two-valued (a missing field is "false", never
NULL), so ``$not`` and ``$ne`` also match entries that lack the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from ._errors import INVALID_FILTER, InvalidRequestError
from ._values import MAX_VALUE_DEPTH, too_deep

UNKNOWN_OPERATOR = "UNKNOWN_OPERATOR"
MAX_DEPTH = 16
MAX_CONDITIONS = 256
MAX_IN_VALUES = 1000
MAX_PATH_LENGTH = 512
#: Integer operands are bound as the engine's 64-bit integers.
MIN_INT_OPERAND, MAX_INT_OPERAND = -(2**63), 2**63 - 1

# One path segment: a label (no quote, backslash, bracket, dot or control character) followed
# by optional array indexes; the label is always emitted quoted, so '$', spaces and the like are
# safe inside it.
_SEGMENT = re.compile(r'([^."\[\]\\\x00-\x1f]+)((?:\[[0-9]{1,9}\])*)')  # matched whole (fullmatch)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NUMERIC = "IN ('integer', 'real')"

Params = list[Any]
#: A piece of a filter's SQL and its height: how many joins and ``NOT`` s it nests (a leaf is 1).
Sql = tuple[str, int]


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid where filter: {message}", code=INVALID_FILTER)


def json_path(field: str) -> str:
    """The engine's JSON path for a dot path (``a.b[0]`` → ``$."a"."b"[0]``)."""
    if not isinstance(field, str) or not field or len(field) > MAX_PATH_LENGTH:
        raise _invalid(f"field paths must be non-empty strings of at most {MAX_PATH_LENGTH} characters")
    parts = []
    for segment in field.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise _invalid(f"bad field path {field!r}")
        parts.append(f'."{match.group(1)}"{match.group(2)}')
    return "$" + "".join(parts)


class _Compiler:
    def __init__(self, column: str, now_ms: int) -> None:
        self.column = column
        self.now_ms = now_ms
        self.conditions = 0

    # -- operands -------------------------------------------------------------------------
    def operand(self, value: Any) -> Any:
        """A scalar operand: ``$now`` and bigint objects resolved, everything else checked."""
        if isinstance(value, dict):
            if value.get("$now") is True and set(value) <= {"$now", "$offset"}:
                offset = value.get("$offset", 0)
                if (
                    not isinstance(offset, int | float)
                    or isinstance(offset, bool)
                    or not math.isfinite(offset)
                ):
                    raise _invalid("$offset must be a number of milliseconds")
                value = self.now_ms + int(offset)
            elif value.get("__type") == "bigint" and set(value) == {"__type", "value"}:
                try:
                    value = int(str(value["value"]))
                except ValueError as exc:
                    raise _invalid("a bigint operand needs an integer string value") from exc
            else:
                raise _invalid(f"unsupported operand {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid("operands must be finite numbers")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not MIN_INT_OPERAND <= value <= MAX_INT_OPERAND
        ):
            raise _invalid("integer operands must fit in 64 bits (-2^63 to 2^63-1)")
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise _invalid(f"unsupported operand {value!r}")

    # -- SQL pieces (each appends its parameters in the order its placeholders appear) ------
    def x(self, path: str, params: Params) -> str:
        params.append(path)
        return f"json_extract({self.column}, ?)"

    def t(self, path: str, params: Params) -> str:
        params.append(path)
        return f"json_type({self.column}, ?)"

    def guarded(self, path: str, value: Any, params: Params, *, fold: bool) -> str:
        """``<type guard> AND <field>``, leaving the comparison to the caller."""
        if isinstance(value, str):
            guard = f"{self.t(path, params)} = 'text'"
            field = self.x(path, params)
            return f"{guard} AND {'lower(' + field + ')' if fold else field}"
        if fold:
            raise _invalid("case-insensitive operators need a string operand")
        if isinstance(value, int | float) and not isinstance(value, bool):
            guard = f"{self.t(path, params)} {_NUMERIC}"
            return f"{guard} AND {self.x(path, params)}"
        raise _invalid(f"operand {value!r} cannot be compared with an ordering operator")

    @staticmethod
    def folded(value: Any, fold: bool) -> Any:
        return value.translate(_ASCII_LOWER) if fold and isinstance(value, str) else value

    def eq(self, path: str, raw: Any, params: Params, *, fold: bool = False) -> str:
        if isinstance(raw, list) or (isinstance(raw, dict) and not _is_scalar_object(raw)):
            if fold:
                raise _invalid("case-insensitive operators need a string operand")
            guard = f"{self.t(path, params)} IN ('array', 'object')"
            field = self.x(path, params)
            params.append(_json_text(raw))
            return f"{guard} AND {field} = json(?)"
        value = self.operand(raw)
        if value is None:
            if fold:
                raise _invalid("case-insensitive operators need a string operand")
            return f"{self.x(path, params)} IS NULL"
        if isinstance(value, bool):
            if fold:
                raise _invalid("case-insensitive operators need a string operand")
            sql = f"{self.t(path, params)} = ?"
            params.append("true" if value else "false")
            return sql
        sql = f"{self.guarded(path, value, params, fold=fold)} = ?"
        params.append(self.folded(value, fold))
        return sql

    def order(self, path: str, raw: Any, op: str, params: Params) -> str:
        value = self.operand(raw)
        if value is None or isinstance(value, bool):
            raise _invalid(f"{op} needs a number or string operand")
        sql = f"{self.guarded(path, value, params, fold=False)} {_ORDER[op]} ?"
        params.append(value)
        return sql

    def between(self, path: str, raw: Any, params: Params) -> str:
        if not isinstance(raw, list) or len(raw) != 2:
            raise _invalid("$between needs [low, high]")
        low, high = self.operand(raw[0]), self.operand(raw[1])
        if not (_comparable(low) and _comparable(high) and isinstance(low, str) == isinstance(high, str)):
            raise _invalid("$between needs two numbers or two strings")
        sql = f"{self.guarded(path, low, params, fold=False)} BETWEEN ? AND ?"
        params.extend([low, high])
        return sql

    def member(self, path: str, raw: Any, params: Params) -> str:
        if not isinstance(raw, list) or len(raw) > MAX_IN_VALUES:
            raise _invalid(f"$in/$nin need a list of at most {MAX_IN_VALUES} values")
        values = [self.operand(v) for v in raw]
        strings = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if _comparable(v) and not isinstance(v, str)]
        bools = sorted({("true" if v else "false") for v in values if isinstance(v, bool)})
        parts: list[str] = []
        for group in (strings, numbers):
            if group:
                marks = ", ".join("?" for _ in group)
                parts.append(f"({self.guarded(path, group[0], params, fold=False)} IN ({marks}))")
                params.extend(group)
        if bools:
            parts.append(f"{self.t(path, params)} IN ({', '.join('?' for _ in bools)})")
            params.extend(bools)
        if any(v is None for v in values):
            parts.append(f"{self.x(path, params)} IS NULL")
        return " OR ".join(parts) if parts else "0"

    def contains(self, path: str, raw: Any, params: Params, *, fold: bool) -> str:
        value = self.operand(raw)
        if value is None:
            raise _invalid("$contains needs a non-null operand")
        if fold and not isinstance(value, str):
            raise _invalid("case-insensitive operators need a string operand")
        kind = self.t(path, params)
        each = f"json_each({self.column}, ?)"
        params.append(path)
        element = "lower(je.value)" if fold else "je.value"
        if isinstance(value, bool):
            element_test = f"je.type = '{'true' if value else 'false'}'"
        else:
            element_test = (
                f"je.type <> 'text' AND {element} = ?"
                if not isinstance(value, str)
                else (f"je.type = 'text' AND {element} = ?")
            )
            params.append(self.folded(value, fold))
        sql = f"CASE {kind} WHEN 'array' THEN EXISTS (SELECT 1 FROM {each} AS je WHERE {element_test})"
        if isinstance(value, str):
            field = self.x(path, params)
            sql += f" WHEN 'text' THEN instr({'lower(' + field + ')' if fold else field}, ?) > 0"
            params.append(self.folded(value, fold))
        return sql + " ELSE 0 END"

    def affix(self, path: str, raw: Any, op: str, params: Params, *, fold: bool) -> str:
        value = self.operand(raw)
        if not isinstance(value, str):
            raise _invalid(f"{op} needs a string operand")
        if not value:
            return f"{self.t(path, params)} = 'text'"
        guarded = self.guarded(path, value, params, fold=fold)
        head, _, field = guarded.rpartition(" AND ")
        start = 1 if op.startswith("$startsWith") else -len(value)
        sql = f"{head} AND substr({field}, ?, ?) = ?"
        params.extend([start, len(value), self.folded(value, fold)])
        return sql

    def empty(self, path: str, params: Params) -> str:
        # Placeholders in text order: the type, then the text, array and object tests, then ELSE.
        kind = self.t(path, params)
        text, array, obj = self.x(path, params), self.x(path, params), self.x(path, params)
        missing = self.t(path, params)
        return (
            f"CASE {kind} WHEN 'null' THEN 1 WHEN 'text' THEN {text} = '' WHEN 'array' THEN {array} = '[]' "
            f"WHEN 'object' THEN {obj} = '{{}}' ELSE {missing} IS NULL END"
        )

    # -- structure ------------------------------------------------------------------------
    def count(self) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _invalid(f"at most {MAX_CONDITIONS} conditions per filter (empty filters count too)")

    def filter(self, where: Any, params: Params, depth: int) -> Sql:
        if not isinstance(where, dict):
            raise _invalid("a filter must be an object")
        if depth > MAX_DEPTH:
            raise _invalid(f"filters nest at most {MAX_DEPTH} levels deep")
        parts: list[Sql] = []
        for name, body in where.items():
            if name in ("$and", "$or"):
                if not isinstance(body, list) or not body:
                    raise _invalid(f"{name} needs a non-empty list of filters")
                joiner = " AND " if name == "$and" else " OR "
                parts.append(_join([self.filter(f, params, depth + 1) for f in body], joiner))
            elif name == "$not":
                inner, height = self.filter(body, params, depth + 1)
                parts.append((f"NOT ({inner})", height + 1))
            elif name.startswith("$"):
                raise InvalidRequestError(f"unknown where operator {name!r}", code=UNKNOWN_OPERATOR)
            else:
                parts.append(self.field(json_path(name), body, params))
        if not parts:
            self.count()
            return ("1", 0)
        return _join(parts, " AND ")

    def field(self, path: str, body: Any, params: Params) -> Sql:
        if not (isinstance(body, dict) and body and all(str(k).startswith("$") for k in body)) or (
            _is_scalar_object(body)
        ):
            return self.leaf(path, "$eq", body, params)
        return _join([self.leaf(path, op, arg, params) for op, arg in body.items()], " AND ")

    def leaf(self, path: str, op: str, arg: Any, params: Params) -> Sql:
        self.count()
        build = _OPERATORS.get(op)
        if build is None:
            raise InvalidRequestError(f"unknown where operator {op!r}", code=UNKNOWN_OPERATOR)
        negate, sql = build(self, path, arg, params)
        # COALESCE makes every condition two-valued, so NOT and $ne match entries lacking the field.
        return (f"{'NOT ' if negate else ''}COALESCE(({sql}), 0)", 1)


_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _join(parts: list[Sql], joiner: str) -> Sql:
    """``parts`` joined by ``joiner`` (``AND``/``OR``: associative) as a tree of parenthesised
    pairs, in their order (the parameters follow the text), merging the adjacent pair whose
    taller side is lowest first: a list of n leaves becomes about log2(n) levels, not n, and a
    nested filter does not sink its whole list one level per sibling."""
    items = list(parts)
    while len(items) > 1:
        i = min(range(len(items) - 1), key=lambda k: max(items[k][1], items[k + 1][1]))
        (left, left_height), (right, right_height) = items[i], items[i + 1]
        items[i : i + 2] = [(f"({left}{joiner}{right})", max(left_height, right_height) + 1)]
    return items[0]


def _flag(op: str, arg: Any) -> bool:
    if not isinstance(arg, bool):
        raise _invalid(f"{op} takes true or false")
    return arg


def _json_text(value: Any) -> str:
    if too_deep(value):
        raise _invalid(f"operands nest at most {MAX_VALUE_DEPTH} arrays/objects deep")
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"operand {value!r} is not JSON") from exc


def _is_scalar_object(value: Any) -> bool:
    """``$now`` and bigint operands are objects but stand for one scalar."""
    return isinstance(value, dict) and (
        (value.get("$now") is True and set(value) <= {"$now", "$offset"})
        or (value.get("__type") == "bigint" and set(value) == {"__type", "value"})
    )


def _comparable(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


Builder = Callable[[_Compiler, str, Any, Params], tuple[bool, str]]


def _ops() -> dict[str, Builder]:
    ops: dict[str, Builder] = {
        "$eq": lambda c, p, a, ps: (False, c.eq(p, a, ps)),
        "$ne": lambda c, p, a, ps: (True, c.eq(p, a, ps)),
        "$eqi": lambda c, p, a, ps: (False, c.eq(p, a, ps, fold=True)),
        "$nei": lambda c, p, a, ps: (True, c.eq(p, a, ps, fold=True)),
        "$between": lambda c, p, a, ps: (False, c.between(p, a, ps)),
        "$in": lambda c, p, a, ps: (False, c.member(p, a, ps)),
        "$nin": lambda c, p, a, ps: (True, c.member(p, a, ps)),
        "$contains": lambda c, p, a, ps: (False, c.contains(p, a, ps, fold=False)),
        "$notContains": lambda c, p, a, ps: (True, c.contains(p, a, ps, fold=False)),
        "$containsi": lambda c, p, a, ps: (False, c.contains(p, a, ps, fold=True)),
        "$notContainsi": lambda c, p, a, ps: (True, c.contains(p, a, ps, fold=True)),
        "$null": lambda c, p, a, ps: (not _flag("$null", a), f"{c.x(p, ps)} IS NULL"),
        "$empty": lambda c, p, a, ps: (not _flag("$empty", a), c.empty(p, ps)),
        "$notEmpty": lambda c, p, a, ps: (_flag("$notEmpty", a), c.empty(p, ps)),
    }
    for name in _ORDER:
        ops[name] = lambda c, p, a, ps, name=name: (False, c.order(p, a, name, ps))  # type: ignore[misc]
    for name in ("$startsWith", "$endsWith"):
        ops[name] = lambda c, p, a, ps, name=name: (False, c.affix(p, a, name, ps, fold=False))  # type: ignore[misc]
        ops[name + "i"] = lambda c, p, a, ps, name=name: (False, c.affix(p, a, name, ps, fold=True))  # type: ignore[misc]
    return ops


_OPERATORS = _ops()
#: Every operator a field condition accepts, for docs and tests.
OPERATORS: tuple[str, ...] = tuple(sorted(_OPERATORS))


def compile_where(where: Any, *, column: str, now_ms: int) -> tuple[str, Params]:
    """``(sql, params)`` for ``where`` on the JSON ``column`` (a constant of the caller's SQL);
    ``("1", [])`` for no filter. Raises :class:`InvalidRequestError` (``INVALID_FILTER`` or
    ``UNKNOWN_OPERATOR``) for a malformed filter."""
    if where is None:
        return "1", []
    params: Params = []
    sql, _ = _Compiler(column, now_ms).filter(where, params, 0)
    return sql, params
