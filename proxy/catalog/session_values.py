"""Per-connection values a catalog answer depends on, computed from :class:`SessionInfo`.

``search_path`` decides ``current_schema()``, ``current_schemas()``, which tables
``pg_table_is_visible`` accepts and how ``regclass`` prints a name; settings answer
``current_setting()`` and ``pg_settings``. Settings a session never set fall back to the builtin
defaults of the snapshot (their ``boot_val``).
"""

from __future__ import annotations

from functools import lru_cache

from dpsql.errors import CantChangeRuntimeParam, InsufficientPrivilege, UndefinedObject
from dpsql.proxy.catalog import pg_snapshot as snap
from dpsql.proxy.catalog.objects import Objects
from dpsql.proxy.session_info import SessionInfo, accepts_setting

_BOOT = {r[0]: r[-1] for r in snap.SETTING_ROWS}
_DEFAULTS = _BOOT | {"jit": "off", "lc_collate": "C", "lc_ctype": "C", "max_connections": "64", "ssl": "off",
                     "default_table_access_method": "heap"}
READ_ONLY_SETTINGS = frozenset({
    "server_version", "server_version_num", "server_encoding", "integer_datetimes", "is_superuser", "max_identifier_length",
    "max_index_keys", "block_size", "lc_collate", "lc_ctype", "in_hot_standby", "max_connections", "session_authorization", "ssl",
})


def setting(info: SessionInfo, name: str) -> str | None:
    """The value of a setting for this session (session value, else builtin default), or None if unknown."""
    key = name.lower()
    value = info.settings.get(key)
    return value if value is not None else _DEFAULTS.get(key)


def all_settings(info: SessionInfo) -> dict[str, str]:
    """Every setting the session can read, name → value (for ``pg_settings``)."""
    return _DEFAULTS | {k: v for k, v in info.settings.items() if v is not None}


def set_setting(info: SessionInfo, name: str, value: str) -> str:
    """Apply ``set_config(name, value, …)`` to the session and return the value; refuse read-only and ``dp.*`` names."""
    key = name.lower()
    if key.startswith("dp."):
        raise InsufficientPrivilege(f'use SET {key} = … to change "{key}"', hint="dp.* settings are changed with SET, not set_config()",
)
    if key in READ_ONLY_SETTINGS:
        raise CantChangeRuntimeParam(f'parameter "{key}" cannot be changed')
    if not accepts_setting(key):  # the same names SET accepts: nothing dpsql ignores is echoed back as set
        raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
    info.settings[key] = value
    return value


def search_path(info: SessionInfo, objects: Objects) -> tuple[str, ...]:
    """The existing schemas of the session's search_path, in order (``"$user"`` expanded, pg_catalog not added)."""
    return _search_path(setting(info, "search_path") or "", info.user, tuple(objects.schemas))


@lru_cache(maxsize=256)
def _search_path(path: str, user: str, existing: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for part in _split_path(path):
        name = user if part == "$user" else part
        if name in existing and name not in out:
            out.append(name)
    return tuple(out)


def _split_path(path: str) -> list[str]:
    """``'"$user", public, "My Schema"'`` → ``['$user', 'public', 'My Schema']``."""
    parts: list[str] = []
    for raw in path.split(","):
        p = raw.strip()
        if len(p) >= 2 and p[0] == '"' and p[-1] == '"':
            parts.append(p[1:-1].replace('""', '"'))
        elif p:
            parts.append(p.lower())
    return parts


def current_schema(info: SessionInfo, objects: Objects) -> str | None:
    """``current_schema()``: the first existing schema of the search path, or None."""
    path = search_path(info, objects)
    return path[0] if path else None


def current_schemas(info: SessionInfo, objects: Objects, implicit: bool) -> list[str]:
    """``current_schemas(implicit)``: the search path, with pg_catalog first when ``implicit`` (unless listed)."""
    path = list(search_path(info, objects))
    if implicit and "pg_catalog" not in path:
        path.insert(0, "pg_catalog")
    return path


def visible_tables(info: SessionInfo, objects: Objects) -> list[int]:
    """OIDs of the policy tables ``pg_table_is_visible`` accepts: the first of each name along the search path."""
    path = search_path(info, objects)
    seen: set[str] = set()
    out: list[int] = []
    for schema in path:
        for t in objects.tables.values():
            if t.schema == schema and t.name not in seen:
                seen.add(t.name)
                out.append(t.oid)
    return out


def resolve_regclass(name: str, info: SessionInfo, objects: Objects) -> int | None:
    """The OID of ``'name'::regclass`` (qualified, or looked up along pg_catalog + search path), or None."""
    parts = _parse_qualified(name)
    if parts is None:
        return None
    if len(parts) == 2:
        schema, rel = parts
        q = f"{schema}.{rel}"
        if q in objects.system_relations:
            return objects.system_relations[q]
        t = objects.tables.get(q)
        return t.oid if t else None
    rel = parts[0]
    for schema in ["pg_catalog", *search_path(info, objects)]:
        q = f"{schema}.{rel}"
        if q in objects.system_relations:
            return objects.system_relations[q]
        if q in objects.tables:
            return objects.tables[q].oid
    return None


def _parse_qualified(name: str) -> list[str] | None:
    """Split ``a.b`` / ``"A"."b"`` into lower-cased (unquoted) or verbatim (quoted) parts."""
    parts: list[str] = []
    i, s = 0, name.strip()
    while i < len(s):
        if s[i] == '"':
            j = i + 1
            buf = []
            while j < len(s):
                if s[j] == '"':
                    if j + 1 < len(s) and s[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(s[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = s.find(".", i)
            j = len(s) if j < 0 else j
            parts.append(s[i:j].strip().lower())
            i = j
        if i < len(s):
            if s[i] != ".":
                return None
            i += 1
    if len(parts) == 3:  # database.schema.table
        parts = parts[1:]
    return parts if 1 <= len(parts) <= 2 and all(parts) else None
