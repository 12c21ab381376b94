"""Session settings (GUCs) over the wire: ``SET``/``SHOW``/``RESET`` and ``ParameterStatus``.

Settings live in :attr:`SessionInfo.settings` (lower-case names), which the synthetic catalog
reads for ``current_setting()``. :class:`Gucs` applies the commands with PostgreSQL's semantics:
values are validated where a wrong value would break the session (``TimeZone``,
``client_encoding``, ``extra_float_digits`` …), read-only settings refuse changes (55P02),
``SET LOCAL`` lasts until the end of the transaction, ``ROLLBACK`` undoes the transaction's
``SET``s, and :meth:`Gucs.reports` lists the ``ParameterStatus`` messages owed to the client.
Only the names in :data:`~dpsql.proxy.session_info.IMPLEMENTED_SETTINGS` and
:data:`~dpsql.proxy.session_info.ACCEPTED_NO_OP_SETTINGS` are accepted; any other ``SET``/``RESET``
(or startup parameter) is refused with 42704 ``unrecognized configuration parameter "x"``, as
PostgreSQL refuses an unknown name, so a setting dpsql does not implement is never reported back
as if applied. The ``dp.*`` settings are the engine's and never reach this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dpsql.errors import (
    CantChangeRuntimeParam,
    DPSQLError,
    InsufficientPrivilege,
    InvalidParameterValue,
    QuerySyntaxError,
    UndefinedObject,
    UnsupportedQuery,
)
from dpsql.proxy.session_info import SessionInfo, accepts_setting
from dpsql.proxy.wire.sqltext import identifier, string_literal, tokens
from dpsql.proxy.wire.types import zone

#: Settings reported with ParameterStatus (PostgreSQL 16's GUC_REPORT set), by display name.
REPORTED = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
)
_REPORTED_KEYS = tuple(name.lower() for name in REPORTED)
DISPLAY = {"datestyle": "DateStyle", "timezone": "TimeZone", "intervalstyle": "IntervalStyle"}
READ_ONLY = frozenset(
    {
        "server_version",
        "server_version_num",
        "server_encoding",
        "integer_datetimes",
        "is_superuser",
        "max_identifier_length",
        "max_index_keys",
        "in_hot_standby",
        "lc_collate",
        "lc_ctype",
        "block_size",
        "segment_size",
        "wal_block_size",
        "data_checksums",
        "max_function_args",
    }
)
_UTF8 = frozenset({"utf8", "unicode"})
_DATE_STYLES = {"iso": "ISO", "sql": "SQL", "postgres": "Postgres", "german": "German"}
_DATE_ORDERS = {"mdy": "MDY", "us": "MDY", "noneuropean": "MDY", "noneuro": "MDY", "dmy": "DMY", "european": "DMY",
                "euro": "DMY", "ymd": "YMD"}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$", re.I)
_DURATION_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}


def display_name(name: str) -> str:
    """The name PostgreSQL shows for a setting (``TimeZone`` for ``timezone``)."""
    return DISPLAY.get(name, name)


def duration_ms(text: str) -> float | None:
    """Milliseconds in a ``statement_timeout``-style value (``5000``, ``5s``, ``1min``), or None."""
    m = _DURATION.match(text)
    if m is None:
        return None
    return float(m.group(1)) * _DURATION_MS[m.group(2).lower() if m.group(2) else None]


def unknown_setting(name: str) -> DPSQLError:
    """42704 for a setting dpsql does not implement, worded as PostgreSQL words an unknown one."""
    hint = ("dpsql accepts the settings drivers send (application_name, DateStyle, TimeZone, search_path, "
            "statement_timeout, extra_float_digits, client_min_messages …; SHOW ALL lists them) and its own "
            "dp.epsilon, dp.delta and dp.session_epsilon")
    return UndefinedObject(f'unrecognized configuration parameter "{name}"', hint=hint)


def _check_name(name: str) -> None:
    if name in READ_ONLY:
        raise CantChangeRuntimeParam(f'parameter "{name}" cannot be changed')
    if not accepts_setting(name):
        raise unknown_setting(name)


def _bad_value(name: str, value: str, hint: str | None = None) -> DPSQLError:
    return InvalidParameterValue(f'invalid value for parameter "{display_name(name)}": "{value}"', hint=hint)


@dataclass(frozen=True, slots=True)
class SetCommand:
    """A parsed ``SET``: ``name`` = ``value`` (None means DEFAULT); ``name`` None for accepted no-ops."""

    name: str | None
    value: str | None
    local: bool = False


def _value_text(name: str, toks: Sequence[str]) -> str | None:
    """The value of ``SET name TO <toks>``: items joined by ``", "``; None for DEFAULT."""
    if not toks:
        raise QuerySyntaxError(f'syntax error at end of input in SET {name}')
    if len(toks) == 1 and toks[0].lower() == "default":
        return None
    items: list[str] = []
    expect_item = True
    for t in toks:
        if t == ",":
            if expect_item:
                raise QuerySyntaxError('syntax error at or near ","')
            expect_item = True
            continue
        if not expect_item:
            # "SET x = a b" — PostgreSQL's grammar has a few two-word values (e.g. 'INTERVAL ...').
            items[-1] = items[-1] + " " + _item(name, t)
            continue
        items.append(_item(name, t))
        expect_item = False
    return ", ".join(items)


def _item(name: str, token: str) -> str:
    s = string_literal(token)
    if s is not None:
        return s
    if token[:2] in ("E'", "e'"):
        return token[2:-1].replace("''", "'")
    if token.startswith('"'):
        return token if name == "search_path" else identifier(token)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", token, re.I):
        return token
    return token.lower()


def parse_set(sql: str, user: str) -> SetCommand:
    """Parse a (non-``dp.*``) ``SET`` statement; 42601 for bad syntax, 42501 for role changes."""
    toks = tokens(sql)
    low = [t.lower() for t in toks]
    i = 1
    local = False
    if len(low) > i and low[i] in ("session", "local"):
        if low[i] == "session" and len(low) > i + 1 and low[i + 1] == "characteristics":
            return SetCommand(None, None)
        if low[i] == "session" and len(low) > i + 1 and low[i + 1] == "authorization":
            _check_role(toks[i + 2 :], user)
            return SetCommand(None, None)
        local = low[i] == "local"
        i += 1
    if len(low) <= i:
        raise QuerySyntaxError("syntax error at end of input")
    head = low[i]
    if head == "time" and len(low) > i + 1 and low[i + 1] == "zone":
        rest = toks[i + 2 :]
        if len(rest) == 1 and rest[0].lower() in ("local", "default"):
            return SetCommand("timezone", None, local)
        if rest and rest[0].lower() == "interval":
            rest = rest[1:2]
        return SetCommand("timezone", _value_text("timezone", rest), local)
    if head in ("transaction", "constraints"):
        return SetCommand(None, None)
    if head == "role":
        _check_role(toks[i + 1 :], user)
        return SetCommand(None, None)
    if head == "names":
        return SetCommand("client_encoding", _value_text("client_encoding", toks[i + 1 :]), local)
    if head == "schema":
        return SetCommand("search_path", _value_text("search_path", toks[i + 1 :]), local)
    name = identifier(toks[i]) if toks[i].startswith('"') else head
    if len(low) <= i + 1 or low[i + 1] not in ("=", "to"):
        raise QuerySyntaxError(f'syntax error at or near "{toks[i + 1] if len(toks) > i + 1 else toks[i]}"')
    return SetCommand(name, _value_text(name, toks[i + 2 :]), local)


def _check_role(toks: Sequence[str], user: str) -> None:
    if len(toks) == 1 and (toks[0].lower() in ("default", "none") or identifier(toks[0]) == user or string_literal(toks[0]) == user):
        return
    raise InsufficientPrivilege("permission denied to set role", hint="dpsql sessions run as the user who logged in")


class Gucs:
    """The settings of one connection, with transaction semantics and ParameterStatus tracking."""

    def __init__(self, info: SessionInfo) -> None:
        self.info = info
        self.session_defaults: dict[str, str] = dict(info.settings)
        self._snapshot: dict[str, str] | None = None
        self._local_prior: dict[str, str | None] = {}
        self._reported: dict[str, str] = {}
        self._last: tuple[str, ...] = ()

    # ------------------------------------------------------------------ values and validation

    def normalize(self, name: str, value: str) -> str:
        """The stored form of ``value`` for ``name``; raises 22023/0A000/55P02 for refused values."""
        _check_name(name)
        if name == "intervalstyle":
            if value.lower() != "postgres":
                raise UnsupportedQuery(f'dpsql sends intervals in the "postgres" IntervalStyle only, not "{value}"',
                                 hint="SET IntervalStyle = postgres")
            return "postgres"
        if name == "client_encoding":
            low = re.sub(r"[^a-z0-9]", "", value.lower())  # PostgreSQL's clean_encoding_name: 'utf-8' is utf8
            if low in _UTF8:
                return "UTF8"
            if low == "sqlascii":
                return "SQL_ASCII"
            raise UnsupportedQuery(
                f'client encoding "{value}" is not supported by dpsql', hint="use client_encoding UTF8"
            )
        if name == "timezone":
            if zone(value) is None:
                raise _bad_value(name, value, "use an IANA zone name such as 'UTC' or 'Europe/Berlin'")
            return value
        if name == "datestyle":
            return self._datestyle(value)
        if name == "extra_float_digits":
            try:
                v = int(value)
            except ValueError:
                raise _bad_value(name, value) from None
            if not -15 <= v <= 3:
                raise InvalidParameterValue(f"{v} is outside the valid range for parameter \"extra_float_digits\" (-15 .. 3)")
            return str(v)
        if name == "standard_conforming_strings" and value.lower() in ("off", "false", "0", "no"):
            raise UnsupportedQuery("dpsql requires standard_conforming_strings = on")
        if name == "bytea_output" and value.lower() != "hex":
            raise UnsupportedQuery("dpsql sends bytea in hex format only")
        if name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout") and duration_ms(value) is None:
            raise _bad_value(name, value)
        if name in ("session_authorization", "role"):
            if value not in (self.info.user, "default", "none"):
                raise InsufficientPrivilege("permission denied to set role")
            return self.info.user
        return value

    def _datestyle(self, value: str) -> str:
        style, order = (p.strip() for p in self.info.settings.get("datestyle", "ISO, MDY").split(",", 1))
        for part in value.split(","):
            p = part.strip().lower()
            if p in _DATE_STYLES:
                if p != "iso":
                    raise UnsupportedQuery(f'dpsql sends dates in the ISO DateStyle only, not "{_DATE_STYLES[p]}"',
                                     hint="SET DateStyle = 'ISO, MDY'")
                style = _DATE_STYLES[p]
            elif p in _DATE_ORDERS:
                order = _DATE_ORDERS[p]
            elif p != "default":
                raise _bad_value("datestyle", value)
        return f"{style}, {order}"

    # ------------------------------------------------------------------------------ commands

    def apply_startup(self, params: Mapping[str, str]) -> dict[str, str]:
        """Apply startup-packet settings (and ``options`` ``-c name=value``); they become the RESET values.

        Returns the ``dp.*`` settings among them, which are the engine session's to apply.
        """
        engine: dict[str, str] = {}
        items = [(k.lower(), v) for k, v in params.items()] + list(parse_options(params.get("options", "")).items())
        for name, value in items:
            if name in ("user", "database", "replication", "options") or name.startswith("_pq_."):
                continue
            if name.startswith("dp."):
                engine[name] = value
                continue
            self.set(name, value)
        self.session_defaults = dict(self.info.settings)
        return engine

    def set(self, name: str, value: str | None, *, local: bool = False, in_transaction: bool = False) -> None:
        """``SET name = value`` (None: DEFAULT)."""
        name = name.lower()
        _check_name(name)
        new = self.session_defaults.get(name) if value is None else self.normalize(name, value)
        settings = self.info.settings
        if local:
            if not in_transaction:
                return
            if name not in self._local_prior:
                self._local_prior[name] = settings.get(name)
        else:
            self._local_prior.pop(name, None)
        if new is None:
            settings.pop(name, None)
        else:
            settings[name] = new

    def reset(self, name: str) -> None:
        """``RESET name`` / ``RESET ALL`` (``name == "all"``)."""
        name = name.lower()
        if name == "all":
            for key in list(self.info.settings):
                if key not in READ_ONLY and accepts_setting(key):
                    self.set(key, None)
            return
        self.set(name, None)

    def show(self, name: str) -> tuple[str, str]:
        """``SHOW name``: the column name and the value; 42704 for an unknown setting."""
        key = name.lower()
        value = self.info.settings.get(key)
        if value is None:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        return display_name(key), value

    def show_all(self) -> list[tuple[str, str, str]]:
        """``SHOW ALL`` rows: name, setting, description."""
        return [(display_name(k), v, "") for k, v in sorted(self.info.settings.items())]

    # ---------------------------------------------------------------------------- transactions

    def begin(self) -> None:
        """Remember the settings at BEGIN, for ROLLBACK."""
        self._snapshot = dict(self.info.settings)
        self._local_prior = {}

    def commit(self) -> None:
        """End the transaction: SET LOCAL values revert."""
        for name, prior in self._local_prior.items():
            if prior is None:
                self.info.settings.pop(name, None)
            else:
                self.info.settings[name] = prior
        self._local_prior = {}
        self._snapshot = None

    def rollback(self) -> None:
        """Abort the transaction: every SET made in it is undone."""
        if self._snapshot is not None:
            self.info.settings.clear()
            self.info.settings.update(self._snapshot)
        self._local_prior = {}
        self._snapshot = None

    # ------------------------------------------------------------------------ ParameterStatus

    def reports(self) -> list[tuple[str, str]]:
        """The (name, value) ParameterStatus pairs whose value changed since the last call."""
        settings = self.info.settings
        current = tuple(settings.get(k, "") for k in _REPORTED_KEYS)
        if current == self._last:
            return []
        self._last = current
        out: list[tuple[str, str]] = []
        for shown in REPORTED:
            value = settings.get(shown.lower(), "")
            if self._reported.get(shown) != value:
                self._reported[shown] = value
                out.append((shown, value))
        return out


_OPTION = re.compile(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=((?:\\.|\S)*)")


def parse_options(options: str) -> dict[str, str]:
    """The ``-c name=value`` / ``--name=value`` pairs of a startup ``options`` string (``\\`` escapes spaces)."""
    out: dict[str, str] = {}
    for m in _OPTION.finditer(options):
        out[m.group(1).lower().replace("-", "_")] = re.sub(r"\\(.)", r"\1", m.group(2))
    return out
