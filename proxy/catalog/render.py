"""Fill a rewritten template's tokens with this execution's values: session facts, settings, parameters.

Markers are ``'<marker>_<n>'`` (a value) or ``"<marker>_<n>"`` (a relation) in the DuckDB text;
the marker carries a per-catalog random nonce, so text a client writes can never be mistaken for one.

"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Sequence
from functools import lru_cache

from dpsql.errors import (
    InternalError,
    InvalidTextRepresentation,
    NullValueNotAllowed,
    UndefinedObject,
    UndefinedParameter,
    UndefinedTable,
)
from dpsql.proxy.catalog import session_values as sv
from dpsql.proxy.catalog.literals import sql_literal
from dpsql.proxy.catalog.objects import Objects
from dpsql.proxy.catalog.rewrite import Template, Token, _pg_array_items
from dpsql.proxy.catalog.synthetic_catalog import PG_SCHEMA
from dpsql.proxy.session_info import SERVER_VERSION, SessionInfo

VERSION = f"PostgreSQL {SERVER_VERSION} (dpsql) on x86_64-pc-linux-gnu, compiled by dpsql, 64-bit"
_XIDS = itertools.count(1000)


def _text_list(items: Sequence[str]) -> str:
    return f"CAST({sql_literal(list(items))} AS VARCHAR[])"


class Renderer:
    """Renders templates of one catalog (its objects, marker and start time)."""

    def __init__(self, objects: Objects, marker: str, start_time: dt.datetime) -> None:
        self.objects = objects
        self._re = re.compile(rf"'({re.escape(marker)}_\d+)'|\"({re.escape(marker)}_\d+)\"")
        self._marker_len = len(marker) + 1
        self._start = f"CAST('{start_time.isoformat()}' AS TIMESTAMPTZ)"

    def render(self, tpl: Template, info: SessionInfo, params: Sequence[object] | None, statement: str, *,
               dry_run: bool = False) -> str:
        """The executable DuckDB SQL of ``tpl`` for this session and these parameters.

        ``dry_run`` (for Describe): parameters are NULL, ``set_config`` changes nothing and unknown
        names become NULL instead of errors.
        """
        if not tpl.tokens:
            return tpl.sql

        def value(m: re.Match[str]) -> str:
            """The SQL text of the token a marker stands for."""
            marker = m.group(1) or m.group(2)
            token = tpl.tokens[int(marker[self._marker_len:])]
            if dry_run:
                if token.kind == "set_config":
                    return sql_literal(self._arg(token.arg[1], params))
                if token.kind in ("setting", "regclass"):
                    token = Token(token.kind + "_ok", token.arg)
            return self._value(token, info, params, statement)

        return self._re.sub(value, tpl.sql)

    def _value(self, token: Token, info: SessionInfo, params: Sequence[object] | None, statement: str) -> str:
        kind, arg = token.kind, token.arg
        ob = self.objects
        if kind == "user":
            return sql_literal(info.user)
        if kind == "database":
            return sql_literal(info.database)
        if kind == "version":
            return sql_literal(VERSION)
        if kind == "pid":
            return str(int(info.backend_pid))
        if kind == "start_time":
            return self._start
        if kind == "xid":
            return str(next(_XIDS))
        if kind == "current_schema":
            return sql_literal(sv.current_schema(info, ob))
        if kind == "current_schemas":
            return _text_list(sv.current_schemas(info, ob, bool(arg)))
        if kind == "search_path_list":
            return _text_list(["pg_catalog", *sv.search_path(info, ob)])
        if kind == "visible_tables":
            return f"CAST({sql_literal(sv.visible_tables(info, ob))} AS UINTEGER[])"
        if kind in ("setting", "setting_ok"):
            v = sv.setting(info, arg)
            if v is None and kind == "setting":
                raise UndefinedObject(f'unrecognized configuration parameter "{arg}"')
            return sql_literal(v)
        if kind == "setting_param":
            n, missing_ok = arg
            if params is None:
                return "NULL"
            if not 1 <= n <= len(params):
                raise UndefinedParameter(f"there is no parameter ${n}")
            return self._value(Token("setting_ok" if missing_ok else "setting", str(params[n - 1])), info, params, statement)
        if kind == "set_config":
            name, value = self._arg(arg[0], params), self._arg(arg[1], params)
            if name is None:
                raise NullValueNotAllowed("set_config() needs a setting name")
            return sql_literal(sv.set_setting(info, str(name), "" if value is None else str(value)))
        if kind in ("regclass", "regclass_ok"):
            oid = sv.resolve_regclass(arg, info, ob)
            if oid is None and kind == "regclass":
                raise UndefinedTable(f'relation "{arg}" does not exist')
            return f"CAST({oid if oid is not None else 'NULL'} AS UINTEGER)"
        if kind in ("param", "param_array"):
            return self._param(int(arg), kind == "param_array", params)
        if kind == "relation":
            return settings_relation(tuple(sorted(sv.all_settings(info).items()))) if arg == "pg_settings" \
                else self._activity(info, statement)
        raise InternalError(f"internal error: unknown catalog token {kind}")

    @staticmethod
    def _arg(arg: tuple[str, object], params: Sequence[object] | None) -> object:
        """The value of a ("lit", text) or ("param", n) argument."""
        kind, v = arg
        if kind == "lit":
            return v
        n = int(v)  # type: ignore[call-overload]
        if params is None:
            return None
        if not 1 <= n <= len(params):
            raise UndefinedParameter(f"there is no parameter ${n}")
        return params[n - 1]

    @staticmethod
    def _param(n: int, array: bool, params: Sequence[object] | None) -> str:
        if params is None:
            return "NULL"  # describe(): parameters are not known yet
        if not 1 <= n <= len(params):
            raise UndefinedParameter(f"there is no parameter ${n}")
        v = params[n - 1]
        if array and isinstance(v, str):
            items = _pg_array_items(v)
            if items is None:
                raise InvalidTextRepresentation(f'malformed array literal: "{v}"')
            return sql_literal(items)
        return sql_literal(v)

    def _activity(self, info: SessionInfo, statement: str) -> str:
        ob = self.objects
        role = ob.roles.get(info.user)
        cols = [
            (ob.database_oid, "UINTEGER", "datid"), (info.database, "VARCHAR", "datname"), (info.backend_pid, "INTEGER", "pid"),
            (None, "INTEGER", "leader_pid"), (role, "UINTEGER", "usesysid"), (info.user, "VARCHAR", "usename"),
            (info.settings.get("application_name", ""), "VARCHAR", "application_name"), (None, "VARCHAR", "client_addr"),
            (None, "VARCHAR", "client_hostname"), (None, "INTEGER", "client_port"),
        ]
        sql = ", ".join(f"CAST({sql_literal(v)} AS {t}) AS {n}" for v, t, n in cols)
        sql += (", CAST(NULL AS TIMESTAMPTZ) AS backend_start, CAST(NULL AS TIMESTAMPTZ) AS xact_start, "
                "current_timestamp AS query_start, current_timestamp AS state_change, CAST(NULL AS VARCHAR) AS wait_event_type, "
                "CAST(NULL AS VARCHAR) AS wait_event, 'active' AS state, CAST(NULL AS UINTEGER) AS backend_xid, "
                "CAST(NULL AS UINTEGER) AS backend_xmin, CAST(NULL AS BIGINT) AS query_id, "
                f"{sql_literal(statement)} AS query, 'client backend' AS backend_type")
        return f"(SELECT {sql})"


@lru_cache(maxsize=128)
def settings_relation(settings: tuple[tuple[str, str], ...]) -> str:
    """``pg_settings`` for one set of session values: the values joined with the builtin descriptions."""
    values = ", ".join(f"({sql_literal(k)}, {sql_literal(v)})" for k, v in settings)
    return (
        "(SELECT v.name AS name, v.setting AS setting, m.unit AS unit, coalesce(m.category, 'Customized Options') AS category, "
        "m.short_desc AS short_desc, m.extra_desc AS extra_desc, coalesce(m.context, 'user') AS context, "
        "coalesce(m.vartype, 'string') AS vartype, 'session' AS source, m.min_val AS min_val, m.max_val AS max_val, "
        "m.enumvals AS enumvals, m.boot_val AS boot_val, v.setting AS reset_val, CAST(NULL AS VARCHAR) AS sourcefile, "
        "CAST(NULL AS INTEGER) AS sourceline, FALSE AS pending_restart "
        f"FROM (VALUES {values}) AS v(name, setting) LEFT JOIN {PG_SCHEMA}.dpsql_settings_meta AS m ON m.name = v.name)"
    )
