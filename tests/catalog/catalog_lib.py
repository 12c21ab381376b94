"""Helpers shared by the catalog tests: the captured client corpus and result comparisons."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
_COLUMN = re.compile(r'("(?:[^"\\]|\\.)*"):([a-z_0-9]+)')
_OID = re.compile(r"\{\{oid:([a-z_.]+)\}\}")

# Columns PostgreSQL 16 added to relations the corpus reads (the corpus was captured on PostgreSQL 15).
PG16_ADDED = frozenset({"daticurules", "collicurules", "last_seq_scan", "last_idx_scan", "n_tup_newpage_upd"})

# Types clients decode alike (text: same string; binary: str / int / list of int). ``"char"`` is not here: asyncpg
# decodes it as bytes, and its type introspection compares ``kind == b'b'``.
_COMPATIBLE = [
    {"name", "text", "varchar", "regclass", "regtype", "regnamespace", "regproc", "regrole"},
    {"oid", "int8", "int4", "int2", "xid"},
    {"_name", "_text", "_varchar"},
    {"_oid", "_int8", "_int4", "_int2", "int2vector", "oidvector"},
]


@dataclass(frozen=True)
class Statement:
    """One captured client statement with what PostgreSQL returned for it."""

    client: str
    name: str
    sql: str
    params: tuple[str | None, ...] | None
    columns: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def id(self) -> str:
        """A pytest id: ``client: name``."""
        return f"{self.client}: {self.name}"

    def bind(self, table_oid: object) -> tuple[str, list[object] | None]:
        """The SQL and parameters with ``{{oid:schema.table}}`` replaced by the catalog's OIDs."""
        def sub(text: str) -> str:
            return _OID.sub(lambda m: str(table_oid(m.group(1))), text)  # type: ignore[operator]

        params = [sub(p) if isinstance(p, str) else p for p in self.params] if self.params is not None else None
        return sub(self.sql), params


def load_corpus() -> list[Statement]:
    """Every statement of every corpus file, in file order."""
    out: list[Statement] = []
    for path in sorted(CORPUS.glob("*.sql")):
        out.extend(_load_file(path))
    return out


def _load_file(path: Path) -> list[Statement]:
    out: list[Statement] = []
    name: str | None = None
    params: tuple[str | None, ...] | None = None
    columns: list[tuple[str, str]] = []
    lines: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), "-- @@ <end>"]:
        if line.startswith("-- @@ "):
            if name is not None:
                out.append(Statement(path.stem, name, "\n".join(lines).strip(), params,
                                     tuple(c for c, _ in columns), tuple(t for _, t in columns)))
            name, params, columns, lines = line[6:].strip(), None, [], []
        elif name is None:
            continue
        elif not lines and line.startswith("-- params: "):
            params = tuple(json.loads(line[len("-- params: "):]))
        elif not lines and line.startswith("-- columns: "):
            columns = [(json.loads(n), t) for n, t in _COLUMN.findall(line)]
        else:
            lines.append(line)
    return out


def compatible(ours: str, postgres: str) -> bool:
    """True when a client reading text gets the same value from a column of type ``ours`` as of ``postgres``."""
    return ours == postgres or any(ours in group and postgres in group for group in _COMPATIBLE)
