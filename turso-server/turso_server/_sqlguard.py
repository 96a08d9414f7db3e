"""The data port's SQL guard: no statement that reaches past the namespace's own database is forwarded.

tursodb's ``POST /v2/pipeline`` runs whatever SQL it is sent, including statements that write or
load files anywhere the server's user can (``VACUUM INTO '/path'``, ``load_extension('/x.so')``).
The proxy therefore calls :func:`check_request` on every data-port request before it forwards a
byte; it refuses the whole request with :class:`StatementForbiddenError` (403 ``statement
forbidden``) or :class:`InvalidPipelineError` (400 ``invalid pipeline``). Every token is subject to
it, the global one included: file operations live on the admin port (backups), never here.

How a body is read:

* **Hrana JSON, strictly.** UTF-8 only, no duplicate keys (Python keeps the last, serde rejects
  them, so a duplicate could make us check a different ``sql`` than tursodb runs), no ``NaN``.
  Every place SQL can travel is checked: ``execute.stmt.sql``, ``batch.batch.steps[].stmt.sql``
  and the texts of ``store_sql``, ``sequence`` and ``describe`` (tursodb 0.7.0 implements only
  ``execute`` and ``batch``; checking the others keeps a stored statement referenced later by
  ``sql_id`` from escaping if a later tursodb adds them). ``close``, ``close_sql`` and
  ``get_autocommit`` carry no SQL; any other request type is refused, since we cannot know what
  it carries. Batch conditions carry no SQL.
* **SQL, with a tokenizer that follows tursodb's lexer** (``parser/src/lexer.rs``): ``'strings'``
  with ``''``, ``"ids"``, ```ids``` and plain ``[ids]`` (below), ``x'blobs'``, ``--`` and
  ``/* */`` comments (unterminated ones run to the end, as in tursodb), variables, numbers, and
  every other character as a one-character token. It never fails: where tursodb would stop with a
  lexer error (an unterminated literal), nothing after that point is run either.
  The text is split at ``;`` into statements and each is classified by its leading keywords;
  every statement of a text is checked, although tursodb 0.7.0 only runs the first.
* **Brackets, where tursodb 0.7.0 is not SQLite.** SQLite reads ``[...]`` as a quoted name up to
  the first ``]``. tursodb 0.7.0 does so only where it expects a name; after ``ARRAY`` or an
  operand (``x[``, ``1 [``, ``)[``, ``'s'[``) it lexes ``[`` as array or subscript syntax and reads
  the inside as ordinary tokens, strings and comments included. So ``ARRAY[']']`` is the string
  ``']'`` to tursodb but the name ``[']`` and the start of a string to SQLite's rule, and what the
  guard then took for string contents was code to tursodb (a ``load_extension`` call in a
  ``DEFAULT`` got through). Rather than copy 0.7.0's parser context, the guard takes ``[...]`` as a
  name only when its inside holds nothing that starts a string, quoted name, comment, call, nested
  bracket or statement (none of ``' " ` [ ( ;``, no ``--`` or ``/*``): such a pair reads the same
  under both rules (in between, at most names, numbers, variables and operators; no literal, call
  or subquery), so the guard and tursodb agree on every string, comment, call and statement
  boundary. Any other ``[`` (``ARRAY[...]``, a subscript holding a literal or a call, an
  unterminated ``[``, a name like ``[a(b)]``) refuses the whole text: up to the first such ``[``
  both read the text alike, so the guard always sees it where tursodb does. The children run
  without ``--experimental-custom-types``, so nobody loses array syntax; plain bracket-quoted names
  (``[my col]``), which a client's own DDL pushes verbatim, keep working, and the statements
  pyturso generates quote names with double quotes.

What is refused (see ``docs/turso-server.md``, "SQL guard", for what tursodb 0.7.0 does with each):

* statements other than the ordinary ones (``SELECT``/``VALUES``/``WITH``, ``INSERT``/
  ``REPLACE``/``UPDATE``/``DELETE``, ``CREATE``/``DROP`` of tables, indexes, views, triggers and
  types, ``ALTER TABLE``, transactions and savepoints, ``ANALYZE``, ``REINDEX``, ``EXPLAIN`` of
  those, and allowed ``PRAGMA``\\ s): ``VACUUM`` (``INTO`` writes any path), ``ATTACH`` and
  ``DETACH`` (other database files), ``CREATE VIRTUAL TABLE`` (modules can open files), and any
  other keyword. A statement that starts with a word that is no keyword at all is a syntax error
  for tursodb and is left to it to report;
* a call of a function that loads or touches files (``load_extension`` and the SQLite-ecosystem
  file functions), wherever it appears: a ``DEFAULT``, a view or trigger body runs it later;
* ``PRAGMA``\\ s outside an allowlist: reads of confined settings, and the few settings that only
  concern this database; ``pragma_<name>`` table-valued functions likewise.

Called by ``_proxy`` once per request, before ``_forward``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from ._cursors import CREATE_SQL, CURSOR_TABLE, READ_SQL, UPSERT_SQL
from ._errors import InvalidPipelineError, StatementForbiddenError

PIPELINE_ROUTE = "/v2/pipeline"

# Token kinds (the regex group names).
_WORD, _QUOTED, _STRING, _PUNCT = "word", "quoted", "string", "punct"
_IDENT_CHARS = r"A-Za-z0-9_$\x80-\U0010ffff"
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t\n\f\r]+)
  | (?P<comment>--[^\n]*\n?|/\*.*?(?:\*/|\Z))
  | (?P<blob>[xX]'[^']*(?:'|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[(?:[^\]'"`\[(;/-]|-(?!-)|/(?!\*))*\])
  | (?P<word>[A-Za-z_\x80-\U0010ffff][{_IDENT_CHARS}]*)
  | (?P<number>0[xX][0-9A-Fa-f_]*
      | [0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?
      | \.[0-9][0-9_]*(?:[eE][+-]?[0-9_]+)?)
  | (?P<variable>\?[0-9]*|[:@$][{_IDENT_CHARS}]+)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_SKIPPED = frozenset({"ws", "comment"})
# A ``[`` the tokenizer could not take as a plain bracket-quoted name (see the module doc).
_BRACKET = (_PUNCT, "[")
BRACKET_REASON = (
    "a [ that is not a plain bracket-quoted name: tursodb 0.7.0 may read it as array or subscript"
    " syntax, which the guard cannot follow (quote such names with double quotes)"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Every keyword of tursodb's lexer (a superset of 0.7.0's). A statement must start with one to run.
KEYWORDS = _words(
    """abort action add after all alter always analyze and as asc attach autoincrement before begin
    between by cascade case cast check collate column commit concurrent conflict constraint create
    cross current current_date current_time current_timestamp database default deferrable deferred
    delete desc detach distinct do drop each else end escape except exclude exclusive exists explain
    extension fail filter first export following for foreign from full function generated glob group
    groups having if ignore immediate in index indexed initially inner insert instead intersect into
    is isnull join key language last left like limit match materialized natural no not nothing
    notnull null nulls of offset on or order optimize others outer over partition plan pragma
    preceding primary query raise range recursive references regexp reindex release rename replace
    returning restrict right rollback row rows savepoint select set table temp temporary then ties to
    transaction trigger type unbounded union unique update using vacuum values view virtual when
    where window with without"""
)
# Statements that stay inside the namespace's database (checked further for functions and pragmas).
ALLOWED_STATEMENTS = _words(
    """select values with insert replace update delete begin commit end rollback savepoint release
    analyze reindex alter drop create pragma"""
)
# What may follow CREATE [TEMP|TEMPORARY] [UNIQUE] [MATERIALIZED]. Not VIRTUAL: a module can open
# files (SQLite's csv, fsdir, zipfile); tursodb 0.7.0 has none that CREATE VIRTUAL TABLE accepts.
CREATE_MODIFIERS = frozenset({"temp", "temporary", "unique", "materialized"})
ALLOWED_CREATE_OBJECTS = frozenset({"table", "index", "view", "trigger", "type"})
# Why a refused statement class is refused (shown in the error detail).
REFUSED_STATEMENTS = {
    "vacuum": "VACUUM INTO writes a database file at any path (in-place VACUUM builds a temporary copy)",
    "attach": "ATTACH opens another database file",
    "detach": "DETACH belongs to ATTACH, which opens another database file",
    "virtual": "CREATE VIRTUAL TABLE modules can open files",
}
# Functions that load code or touch files: tursodb 0.7.0 has load_extension (it dlopen()s any
# path); the rest are SQLite's fileio/zipfile/sqlar functions, refused in case a build adds them.
FILE_FUNCTIONS = frozenset(
    {"load_extension", "readfile", "writefile", "edit", "fsdir", "lsmode", "zipfile", "sqlar_uncompress"}
)
# PRAGMAs that only report, by name, without argument.
PRAGMA_READS = _words(
    """application_id auto_vacuum busy_timeout cache_size cache_spill capture_data_changes_conn
    data_sync_retry database_list encoding foreign_keys freelist_count full_column_names function_list
    ignore_check_constraints integrity_check journal_mode list_types locking_mode max_page_count
    module_list mvcc_checkpoint_threshold mvcc_gc_threshold page_count page_size pragma_list
    query_only quick_check require_where schema_version short_column_names synchronous table_list
    temp_store user_version"""
)
# PRAGMAs that may take an argument: lookups by name, and settings of this database or connection
# that reach nothing else. Refused with an argument (among others): journal_mode (mvcc adds a log
# file and changes what the sync server serves), locking_mode (normal lets other processes open the
# file), wal_checkpoint (truncating the WAL the sync server serves pulls from broke bootstraps on
# 0.7.0), vdbe_trace (writes to the server log), cipher/hexkey (encryption keys), the CDC
# switches, and every setting of the connection rather than the database: tursodb 0.7.0 serves
# all clients of a namespace on one connection and keeps such a setting until its restart, so
# cache_size and busy_timeout (its memory, its stalls), query_only (every later push and the admin
# backup fail), ignore_check_constraints, foreign_keys and require_where (what every other
# client's writes are checked against), full/short_column_names (the shape of their replies) and
# max_page_count would reach every other client. Their values can still be read.
PRAGMA_ARGUMENTS = _words(
    """table_info table_xinfo index_info index_list index_xinfo foreign_key_list table_list
    integrity_check quick_check application_id user_version"""
)
# Connection settings: refused with an argument for the reason above (named in the refusal).
PRAGMA_CONNECTION_SETTINGS = _words(
    """busy_timeout cache_size cache_spill foreign_keys ignore_check_constraints require_where
    full_column_names short_column_names query_only max_page_count synchronous temp_store"""
)
PRAGMA_LOOKUPS = _words("table_info table_xinfo index_info index_list index_xinfo foreign_key_list")
# ``pragma_<name>`` table-valued functions: on 0.7.0 their arguments are lookups, never new values.
PRAGMA_TABLES = PRAGMA_READS | PRAGMA_LOOKUPS
PRAGMA_TABLE_PREFIX = "pragma_"
# Request types by what they carry.
SQL_TEXT_REQUESTS = frozenset({"store_sql", "sequence", "describe"})
NO_SQL_REQUESTS = frozenset({"close", "close_sql", "get_autocommit"})

# The sync client's cursor table (``_cursors.CURSOR_TABLE``): its exact statements pass; any other
# statement naming it must be a SELECT, so the server always knows what the table holds.
SYNC_CLIENT_TEXTS = frozenset({READ_SQL, CREATE_SQL, UPSERT_SQL})

Token = tuple[str, str]
ALLOWED_CACHE_SIZE = 4096
ALLOWED_CACHE_TEXT_LIMIT = 4096
_allowed: set[str] = set()


@dataclass(frozen=True)
class CheckedPipeline:
    """A pipeline the guard let through: its parsed body and every SQL text in it."""

    document: dict[str, Any]
    texts: list[str]


def check_request(rest: str, body: bytes) -> CheckedPipeline | None:
    """Check a data-port request for ``/<ns><rest>``; only the pipeline route carries SQL.

    ``/pull-updates`` carries a protobuf whose one string field that could hold a query
    (``server_query_selector``) tursodb 0.7.0 never reads.
    """
    if rest == PIPELINE_ROUTE:
        return check_pipeline(body)
    return None


def check_pipeline(body: bytes) -> CheckedPipeline:
    """Raise unless every SQL text in the Hrana pipeline ``body`` stays inside its database."""
    try:
        document = json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidPipelineError(f"the pipeline body is not strict JSON: {_reason(exc)}") from None
    root = _expect_object(document, "body")
    requests = root.get("requests")
    if not isinstance(requests, list):
        raise InvalidPipelineError("body.requests must be a list")
    texts: list[str] = []
    for index, request in enumerate(requests):
        _check_stream_request(request, f"requests[{index}]", texts)
    return CheckedPipeline(root, texts)


def check_sql(sql: str, where: str = "sql") -> None:
    """Raise :class:`StatementForbiddenError` if any statement of ``sql`` reaches past its database.

    Texts already found harmless are remembered (the sync client pushes the same parameterised
    statements over and over); a refusal is never cached, so its detail always names ``where``.
    """
    if sql in _allowed or sql in SYNC_CLIENT_TEXTS:
        return
    tokens = tokenize(sql)
    if _BRACKET in tokens:
        _refuse(where, BRACKET_REASON)
    for statement in split_statements(tokens):
        _check_statement(statement, where)
    if len(sql) <= ALLOWED_CACHE_TEXT_LIMIT:
        if len(_allowed) >= ALLOWED_CACHE_SIZE:
            _allowed.clear()  # crude but bounded: a burst of distinct texts costs one re-check each
        _allowed.add(sql)


def tokenize(sql: str) -> list[Token]:
    """``(kind, text)`` for every token of ``sql`` except whitespace and comments; never fails."""
    return [
        (kind, match.group())
        for match in _TOKEN.finditer(sql)
        if (kind := match.lastgroup or _PUNCT) not in _SKIPPED
    ]


def split_statements(tokens: list[Token]) -> Iterator[list[Token]]:
    """Split at ``;``; empty statements are dropped.

    A trigger body's own ``;`` splits it too; its pieces are DML statements and ``END``, all of
    which are allowed, so the naive split only ever refuses more, never less.
    """
    current: list[Token] = []
    for token in tokens:
        if token == (_PUNCT, ";"):
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def name_of(token: Token) -> str | None:
    """The identifier a token names, ASCII-lowercased (tursodb folds ASCII only), or ``None``."""
    kind, text = token
    if kind == _WORD:
        name = text
    elif kind in (_QUOTED, _STRING):
        opener = text[0]
        closer = "]" if opener == "[" else opener
        inner = text[1:-1] if len(text) > 1 and text.endswith(closer) else text[1:]
        name = inner if opener == "[" else inner.replace(closer * 2, closer)
    else:
        return None
    return name.lower() if name.isascii() else name


# --- internals -------------------------------------------------------------------------------------


def _check_stream_request(request: object, where: str, texts: list[str]) -> None:
    entry = _expect_object(request, where)
    kind = entry.get("type")
    if kind == "execute":
        _check_stmt(entry.get("stmt"), f"{where}.stmt", texts)
    elif kind == "batch":
        batch = _expect_object(entry.get("batch"), f"{where}.batch")
        steps = batch.get("steps")
        if not isinstance(steps, list):
            raise InvalidPipelineError(f"{where}.batch.steps must be a list")
        for index, step in enumerate(steps):
            step_where = f"{where}.batch.steps[{index}]"
            _check_stmt(_expect_object(step, step_where).get("stmt"), f"{step_where}.stmt", texts)
    elif kind in SQL_TEXT_REQUESTS:
        _check_text(entry.get("sql"), f"{where}.sql", texts)
    elif kind not in NO_SQL_REQUESTS:
        raise InvalidPipelineError(f"{where}.type {kind!r} is not a known Hrana request type")


def _check_stmt(stmt: object, where: str, texts: list[str]) -> None:
    # A statement by ``sql_id`` runs a text stored by ``store_sql``, which was checked when stored;
    # what it does is unknown here, so it counts as naming the sync cursor table.
    body = _expect_object(stmt, where)
    if body.get("sql_id") is not None:
        texts.append(CURSOR_TABLE)
    _check_text(body.get("sql"), f"{where}.sql", texts)


def _check_text(sql: object, where: str, texts: list[str]) -> None:
    if sql is None:
        return
    if not isinstance(sql, str):
        raise InvalidPipelineError(f"{where} must be a string")
    check_sql(sql, where)
    texts.append(sql)


def _check_statement(tokens: list[Token], where: str) -> None:
    # Function calls and pragma tables are refused in every statement, whatever its kind.
    for index, token in enumerate(tokens):
        name = name_of(token)
        if name is None:
            continue
        if name in FILE_FUNCTIONS and index + 1 < len(tokens) and tokens[index + 1] == (_PUNCT, "("):
            _refuse(where, f"{name}() loads code or touches files")
        # Strings too: tursodb takes ``FROM 'pragma_x'`` as a table name.
        if name.startswith(PRAGMA_TABLE_PREFIX):
            pragma = name[len(PRAGMA_TABLE_PREFIX) :]
            if pragma not in PRAGMA_TABLES:
                _refuse(where, f"the table-valued function {name} is not allowed")
    start = _skip_explain(tokens)
    if start >= len(tokens) or tokens[start][0] != _WORD:
        return  # not a keyword: a syntax error for tursodb, which reports it
    keyword = tokens[start][1].lower()
    if keyword != "select" and any(name_of(token) == CURSOR_TABLE for token in tokens):
        _refuse(where, f"{CURSOR_TABLE} is the sync engine's bookkeeping: only its client writes it")
    if keyword not in KEYWORDS:
        return
    if keyword not in ALLOWED_STATEMENTS:
        _refuse(where, REFUSED_STATEMENTS.get(keyword, f"{keyword.upper()} statements are not allowed"))
    if keyword == "create":
        _check_create(tokens, start + 1, where)
    elif keyword == "pragma":
        _check_pragma(tokens, start + 1, where)


def _skip_explain(tokens: list[Token]) -> int:
    """The index of the first token after ``EXPLAIN [QUERY PLAN]``."""
    index = 0
    if _word_at(tokens, index) == "explain":
        index += 1
        if _word_at(tokens, index) == "query" and _word_at(tokens, index + 1) == "plan":
            index += 2
    return index


def _check_create(tokens: list[Token], index: int, where: str) -> None:
    while _word_at(tokens, index) in CREATE_MODIFIERS:
        index += 1
    target = _word_at(tokens, index)
    if target not in ALLOWED_CREATE_OBJECTS:
        label = (target or "").upper() or "an empty CREATE"
        reason = REFUSED_STATEMENTS.get(target or "", f"CREATE {label} is not allowed")
        _refuse(where, reason)


def _check_pragma(tokens: list[Token], index: int, where: str) -> None:
    """``PRAGMA [schema.]name [= value | (value)]``; the name may be a word, quoted or a string."""
    names = []
    while index < len(tokens):
        name = name_of(tokens[index])
        if name is None:
            break
        names.append(name)
        index += 1
        if index < len(tokens) and tokens[index] == (_PUNCT, "."):
            index += 1
            continue
        break
    if not names:
        return  # ``PRAGMA`` alone or followed by punctuation: tursodb reports the syntax error
    pragma = names[-1]
    has_argument = index < len(tokens)
    if has_argument and pragma in PRAGMA_CONNECTION_SETTINGS:
        _refuse(
            where,
            f"PRAGMA {pragma} with an argument is not allowed: it would change the one connection "
            "every client of this database shares",
        )
    if has_argument and pragma not in PRAGMA_ARGUMENTS:
        _refuse(where, f"PRAGMA {pragma} with an argument is not allowed")
    if not has_argument and pragma not in PRAGMA_READS and pragma not in PRAGMA_ARGUMENTS:
        _refuse(where, f"PRAGMA {pragma} is not allowed")


def _word(token: Token) -> str | None:
    return token[1].lower() if token[0] == _WORD else None


def _word_at(tokens: list[Token], index: int) -> str | None:
    return _word(tokens[index]) if index < len(tokens) else None


def _refuse(where: str, reason: str) -> NoReturn:
    raise StatementForbiddenError(f"{where}: {reason} (refused on the data port)")


def _expect_object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPipelineError(f"{where} must be a JSON object")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in an object")
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:200]
