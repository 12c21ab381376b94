"""Results: describing and sending a statement's result — RowDescription (cached per shape),
DataRows in text or binary format with per-shape encoder lists, NOTICEs and the command tag.

Rows are encoded in chunks of :data:`ROW_CHUNK`; when more than :data:`OUT_HIGH_WATER` bytes are
pending, sending yields a :class:`~dpsql.proxy.wire.driver.Drain` so one slow reader holds at most
that much output. Mixed into :class:`~dpsql.proxy.wire.connection.Connection`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dpsql.errors import ProtocolViolation
from dpsql.proxy.engine import Result
from dpsql.proxy.wire import messages as m
from dpsql.proxy.wire import types as pgt
from dpsql.proxy.wire.driver import Drain, Handler
from dpsql.proxy.wire.portals import Described

if TYPE_CHECKING:
    from dpsql.proxy.session_info import SessionInfo
    from dpsql.proxy.wire.connection import ServerContext

ROW_CHUNK = 256  # rows encoded between flow-control checks
OUT_HIGH_WATER = 256 * 1024  # bytes of pending output that trigger a Drain while sending rows


def _tag_only(tag: str) -> Result:
    return Result((), (), [], command=tag)


_EMPTY = Result((), (), [], command="")


@dataclass
class _FetchResult(Result):
    """FETCH output: rows of a cursor, whose tag is ``FETCH n``."""

    binary: bool = field(default=False)

    @property
    def tag(self) -> str:
        return self.command


def _returns_rows(result: Result) -> bool:
    return bool(result.columns) or result.command == "SELECT" or result.command.startswith("FETCH")


class ResultsMixin:
    """Result encoding for the connection (uses its ``out``, ``ctx``, ``info`` and encoder caches)."""

    out: bytearray
    ctx: ServerContext
    info: SessionInfo | None
    _ctx_cache: tuple[str, str, pgt.OutputContext] | None
    _encoders: dict[tuple[Any, ...], list[Callable[[Any], bytes]]]

    def _send_description(self, described: Described | None, formats: Sequence[int]) -> None:
        if described is None:
            self.out += m.NO_DATA
        else:
            self.out += self._row_description(described.names, described.types, formats)

    def _row_description(self, names: Sequence[str], types: Sequence[str], formats: Sequence[int]) -> bytes:
        key = (tuple(names), tuple(types), tuple(formats))
        cache = self.ctx.row_descriptions
        hit = cache.get(key)
        if hit is None:
            hit = m.encode_row_description(self._fields(names, types, formats))
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = hit
        return hit

    def _output_ctx(self) -> pgt.OutputContext:
        info = self.info
        tzname = info.settings.get("timezone", "UTC") if info is not None else "UTC"
        efd = info.settings.get("extra_float_digits", "1") if info is not None else "1"
        cached = self._ctx_cache
        if cached is not None and cached[0] == tzname and cached[1] == efd:
            return cached[2]
        ctx = pgt.OutputContext(pgt.zone(tzname) or datetime.UTC, int(efd) if efd.lstrip("-").isdigit() else 1)
        self._ctx_cache = (tzname, efd, ctx)
        return ctx

    def _type(self, name: str) -> pgt.PgType:
        cache = self.ctx.types
        hit = cache.get(name)
        if hit is not None:
            return hit
        t = self._resolve_type(name)
        if len(cache) < 4096:
            cache[name] = t
        return t

    def _resolve_type(self, name: str) -> pgt.PgType:
        t = pgt.type_by_name(name)
        if t is pgt.TEXT and name not in ("text", "pg_catalog.text") and self.ctx.catalog is not None:
            try:
                oid = int(self.ctx.catalog.type_oid(name))
            except Exception:
                return t
            known = pgt.type_by_oid(oid)
            return known if known is not None else pgt.PgType(name, oid, -1)
        return t

    def _fields(self, names: Sequence[str], types: Sequence[str], formats: Sequence[int]) -> list[m.FieldDescription]:
        n = len(names)
        if len(formats) not in (0, 1, n):
            raise ProtocolViolation(f"bind message has {len(formats)} result formats but query has {n} columns")
        out = []
        for i, (name, tname) in enumerate(zip(names, types, strict=True)):
            t = self._type(tname)
            fmt = formats[0] if len(formats) == 1 else (formats[i] if formats else 0)
            out.append(m.FieldDescription(name, t.oid, t.typlen, -1, fmt))
        return out

    def _send_result(self, result: Result, formats: Sequence[int], *, describe: bool) -> Handler:
        self._send_notices(result)
        if _returns_rows(result):
            if describe:
                self.out += self._row_description(result.columns, result.types, formats)
            yield from self._send_rows(result.rows, 0, len(result.rows), result.types, formats, len(result.columns))
        self.out += m.encode_command_complete(result.tag)

    def _send_notices(self, result: Result) -> None:
        for text in result.notices:
            self._notice(text)

    def _send_rows(
        self, rows: Sequence[Sequence[Any]], start: int, end: int, types: Sequence[str], formats: Sequence[int], ncols: int
    ) -> Handler:
        if start >= end:
            return
        ctx = self._output_ctx()
        key = (ctx, tuple(types), tuple(formats), ncols)
        encs = self._encoders.get(key)
        if encs is None:
            encs = []
            for i in range(ncols):
                t = self._type(types[i]) if i < len(types) else pgt.TEXT
                fmt = formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
                encs.append(pgt.binary_encoder(t) if fmt == 1 else pgt.text_encoder(t, ctx))
            if len(self._encoders) >= 256:
                self._encoders.clear()
            self._encoders[key] = encs
        data_row = m.encode_data_row
        i = start
        while i < end:
            stop = min(end, i + ROW_CHUNK)
            out = self.out  # the driver may swap the buffer during a Drain
            for r in range(i, stop):
                row = rows[r]
                out += data_row([None if v is None else enc(v) for enc, v in zip(encs, row, strict=False)])
            i = stop
            if i < end and len(self.out) > OUT_HIGH_WATER:
                yield Drain()
