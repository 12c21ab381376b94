"""What a wire connection knows about itself, shared by the protocol layer and the synthetic catalog.

The protocol layer (``dpsql.proxy.wire``) owns and updates it (startup parameters, ``SET``); the
catalog (``dpsql.proxy.catalog``) reads it to answer ``current_setting()``, ``current_user``,
``current_database()``, ``pg_backend_pid()`` and ``SHOW``-like probes. Nothing here is private.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVER_VERSION = "16.4"  # reported as a PostgreSQL 16 server (psql/pgjdbc/SQLAlchemy pick queries by it)
SERVER_VERSION_NUM = "160004"


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
