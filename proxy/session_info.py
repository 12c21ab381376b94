"""What a wire connection knows about itself, shared by the protocol layer and the synthetic catalog.

The protocol layer (``dpsql.proxy.wire``) owns and updates it (startup parameters, ``SET``); the
catalog (``dpsql.proxy.catalog``) reads it to answer ``current_setting()``, ``current_user``,
``current_database()``, ``pg_backend_pid()`` and ``SHOW``-like probes. Nothing here is private.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVER_VERSION = "16.4"  # reported as a PostgreSQL 16 server (psql/pgjdbc/SQLAlchemy pick queries by it)
SERVER_VERSION_NUM = "160004"


#: Settings dpsql implements: each changes what the session sees (output formats, notices, the
#: client-side statement timeout, the catalog's search path) or is validated against the only value
#: dpsql supports (``bytea_output = hex``, ``standard_conforming_strings = on``, ISO dates,
#: ``postgres`` intervals, UTF8).
IMPLEMENTED_SETTINGS = frozenset({
    "application_name", "client_encoding", "datestyle", "intervalstyle", "timezone", "extra_float_digits",
    "standard_conforming_strings", "bytea_output", "statement_timeout", "search_path", "client_min_messages",
    "session_authorization", "role",
})  # fmt: skip
#: Settings drivers and tools send routinely that have no work to do in dpsql (it holds no locks,
#: keeps no idle transactions, runs read-only snapshots, has no JIT or planner knobs that change
#: results); they are accepted and recorded so a client's ``SHOW`` reads back what it set.
ACCEPTED_NO_OP_SETTINGS = frozenset({
    "lock_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout", "jit", "transaction_isolation",
    "default_transaction_isolation", "transaction_read_only", "default_transaction_read_only",
    "transaction_deferrable", "default_transaction_deferrable", "lc_messages", "lc_monetary", "lc_numeric", "lc_time",
    "row_security", "xmloption", "escape_string_warning", "array_nulls", "backslash_quote", "default_text_search_config",
    "timezone_abbreviations", "check_function_bodies",
})  # fmt: skip


def accepts_setting(name: str) -> bool:
    """True when ``SET name`` (lower-case) is one dpsql implements or accepts as a no-op, or a custom
    placeholder (a dotted name outside ``dp.*``, which PostgreSQL too only stores for
    ``current_setting()``); any other name is refused with 42704 like an unknown setting in
    PostgreSQL, never echoed as applied."""
    if name in IMPLEMENTED_SETTINGS or name in ACCEPTED_NO_OP_SETTINGS:
        return True
    return "." in name.strip(".") and not name.startswith("dp.")


def default_settings() -> dict[str, str]:
    """The GUC values a new connection starts with (names lower-case, as ``SHOW`` prints them)."""
    return {
        "server_version": f"{SERVER_VERSION} (dpsql)",
        "server_version_num": SERVER_VERSION_NUM,
        "server_encoding": "UTF8",
        "client_encoding": "UTF8",
        "datestyle": "ISO, MDY",
        "timezone": "UTC",
        "intervalstyle": "postgres",
        "integer_datetimes": "on",
        "standard_conforming_strings": "on",
        "application_name": "",
        "search_path": '"$user", public',
        "transaction_isolation": "read committed",
        "default_transaction_isolation": "read committed",
        "transaction_read_only": "on",
        "default_transaction_read_only": "on",
        "is_superuser": "off",
        "session_authorization": "",
        "extra_float_digits": "1",
        "client_min_messages": "notice",
        "lc_messages": "C",
        "lc_monetary": "C",
        "lc_numeric": "C",
        "lc_time": "C",
        "bytea_output": "hex",
        "max_identifier_length": "63",
        "max_index_keys": "32",
        "statement_timeout": "0",
        "in_hot_standby": "off",
    }


@dataclass
class SessionInfo:
    """Per-connection facts and settings. ``settings`` maps lower-case GUC names to text values."""

    user: str
    database: str
    backend_pid: int
    settings: dict[str, str] = field(default_factory=default_settings)
    in_transaction: bool = False

    def setting(self, name: str) -> str | None:
        """The current value of a GUC (case-insensitive), or None if unknown."""
        return self.settings.get(name.lower())
