"""A small SQL lexer for the wire layer: statement splitting, ``$n`` placeholders, and recognising
the session and transaction commands the wire layer answers itself.

It understands PostgreSQL's lexical structure well enough never to split or substitute inside
a literal or comment: standard strings (``'it''s'``), escape strings (``E'\\''``), quoted
identifiers, dollar quoting (``$tag$ … $tag$``), ``--`` comments and nested ``/* */`` comments.

>>> split_statements("SELECT ';'; /* ; */ SELECT 2;;")
["SELECT ';'", '/* ; */ SELECT 2']
>>> placeholder_count("SELECT $1, '$2' -- $3\\n, $2")
2
>>> command_words("  /* hi */ begin read only;")
['begin', 'read', 'only']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dpsql.errors import LimitExceeded, QuerySyntaxError

_SPECIAL = re.compile(r"""['";\-/$]""")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_PLACEHOLDER = re.compile(r"\$(\d+)")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\uffff]")


@dataclass(frozen=True, slots=True)
class Lexed:
    """One SQL string, lexed: its statements (comments kept, blanks trimmed) and the offsets of
    ``$n`` placeholders outside literals and comments."""

    statements: tuple[str, ...]
    placeholders: tuple[tuple[int, int, int], ...]  # (start, end, n) in the original text


def _scan(sql: str) -> Lexed:
    """Walk ``sql`` once; raise 42601 for an unterminated literal or comment."""
    stmts: list[str] = []
    holders: list[tuple[int, int, int]] = []
    start = 0
    i = 0
    n = len(sql)
    while True:
        m = _SPECIAL.search(sql, i)
        if m is None:
            break
        i = m.start()
        c = sql[i]
        if c == "'":
            escape = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(sql[i - 2]))
            i = _end_of_string(sql, i + 1, escape)
        elif c == '"':
            j = i + 1
            while True:
                k = sql.find('"', j)
                if k < 0:
                    raise _unterminated("quoted identifier", i)
                if sql.startswith('"', k + 1):
                    j = k + 2
                    continue
                i = k + 1
                break
        elif c == ";":
            stmts.append(sql[start:i])
            start = i + 1
            i += 1
        elif c == "-":
            if sql.startswith("--", i):
                k = sql.find("\n", i)
                i = n if k < 0 else k + 1
            else:
                i += 1
        elif c == "/":
            if sql.startswith("/*", i):
                i = _end_of_comment(sql, i)
            else:
                i += 1
        else:  # "$"
            pm = _PLACEHOLDER.match(sql, i)
            if pm is not None and (i == 0 or not _IDENT_CHAR.match(sql[i - 1])):
                holders.append((i, pm.end(), int(pm.group(1))))
                i = pm.end()
                continue
            tm = _DOLLAR_TAG.match(sql, i)
            if tm is not None and (i == 0 or not _IDENT_CHAR.match(sql[i - 1])):
                tag = tm.group(0)
                k = sql.find(tag, tm.end())
                if k < 0:
                    raise _unterminated("dollar-quoted string", i)
                i = k + len(tag)
            else:
                i += 1
    stmts.append(sql[start:])
    out = tuple(s.strip() for s in stmts if not _is_blank(s))
    return Lexed(out, tuple(holders))


def _end_of_string(sql: str, i: int, escape: bool) -> int:
    n = len(sql)
    while i < n:
        c = sql[i]
        if escape and c == "\\":
            i += 2
            continue
        if c == "'":
            if sql.startswith("'", i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    raise _unterminated("quoted string", i)


def _end_of_comment(sql: str, i: int) -> int:
    depth = 0
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise _unterminated("/* comment", i)


def _unterminated(what: str, pos: int) -> QuerySyntaxError:
    e = QuerySyntaxError(f"unterminated {what} at or near end of input")
    e.position = pos + 1  # type: ignore[attr-defined]
    return e


_BLANK = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)


def _is_blank(s: str) -> bool:
    return not s or _BLANK.fullmatch(s) is not None


_CACHE: dict[str, Lexed] = {}
_CACHE_SIZE = 1024


def lex(sql: str) -> Lexed:
    """The (cached) lexing of ``sql``; QuerySyntaxError (42601) for unterminated literals."""
    hit = _CACHE.get(sql)
    if hit is not None:
        return hit
    lexed = _scan(sql)
    if len(sql) <= 8192:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()  # atomic under the GIL; callers in several threads stay safe
        _CACHE[sql] = lexed
    return lexed


def split_statements(sql: str) -> list[str]:
    """The statements of a simple-query string, in order, without empty ones."""
    return list(lex(sql).statements)


def placeholder_count(sql: str) -> int:
    """The highest ``$n`` used outside literals and comments (0 when none)."""
    holders = lex(sql).placeholders
    return max((h[2] for h in holders), default=0)


_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*(?:[^*]|\*(?!/))*\*/)*", re.S)
_WORD = re.compile(r"\s*(\"(?:[^\"]|\"\")*\"|[A-Za-z_][A-Za-z0-9_$.]*|[(=,*;]|'(?:[^']|'')*'|[^\s(=,;']+)", re.S)


def strip_leading(sql: str) -> str:
    """``sql`` without leading blanks and comments."""
    m = _LEADING.match(sql)
    return sql[m.end() :] if m else sql


def command_words(sql: str, limit: int = 4) -> list[str]:
    """The first ``limit`` words of a statement, lower-cased unless quoted (comments skipped)."""
    text = strip_leading(sql).rstrip().rstrip(";")
    words: list[str] = []
    pos = 0
    while len(words) < limit:
        m = _WORD.match(text, pos)
        if m is None:
            break
        w = m.group(1)
        words.append(w if w.startswith(('"', "'")) else w.lower())
        pos = m.end()
    return words


def tokens(text: str) -> list[str]:
    """All word-level tokens of a short command (``SET``/``FETCH``/``DECLARE`` heads), quoted ones kept as written."""
    out: list[str] = []
    pos = 0
    text = text.strip().rstrip(";")
    while True:
        m = _WORD.match(text, pos)
        if m is None:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def identifier(token: str) -> str:
    """An SQL identifier's name: quoted ones as written (``""`` unescaped), others lower-cased."""
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token.lower()


def quote_identifier(name: str) -> str:
    """``name`` quoted when PostgreSQL would need it."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def string_literal(token: str) -> str | None:
    """The value of a ``'…'`` or ``E'…'`` literal token, or None if ``token`` is not one."""
    if len(token) >= 2 and token.startswith("'") and token.endswith("'"):
        return token[1:-1].replace("''", "'")
    return None


def check_length(sql: str, limit: int) -> None:
    """Raise 54000 when ``sql`` is longer than ``limit`` bytes (UTF-8)."""
    if len(sql) > limit // 4 and len(sql.encode("utf-8", "surrogatepass")) > limit:
        raise LimitExceeded(
            f"the statement is longer than {limit} bytes",
            hint="shorten the query or raise [limits] max_statement_bytes",
        )
