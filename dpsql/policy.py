"""The policy file (DESIGN §2): loading, validation and the immutable model the rest of dpsql reads.

Every validation error is a :class:`~dpsql.errors.PolicyError` naming the file, the dotted key
and the problem, e.g. ``policy.toml: tables.visits.columns.age: lower (130) is above upper (120)``.
Unknown keys are errors too, so a typo never silently weakens a policy.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from dpsql.errors import PolicyError

Accounting = Literal["zcdp", "basic"]
ScalarValue = str | int | float | bool
TimeBound = _dt.date | _dt.datetime  # a datetime is a date subclass: check it first

#: The reserved column under which a table whose rows belong to a unit through a key path
#: (``privacy_unit = { via = …, references = … }``) carries its unit in the bounded SQL; never a
#: physical or visible column (the rewriter joins it in, :mod:`dpsql.rewriter.unit_paths`).
KEYED_UNIT = "__dp_unit"
#: The most key steps from a keyed table to the table holding the unit column (a → b → c is 2).
MAX_UNIT_PATH = 3

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"7d"``, ``"12h"``, ``"30s"`` or ``"250ms"``; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration like '30s', '12h' or '7d'")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


MAX_DISTINCT = 10_000  # largest per-column max_distinct: bounds the per-(unit, group) ranking and the sensitivity


@dataclass(frozen=True)
class ColumnPolicy:
    """What the policy says about one column: clamping bounds and/or a public set of values."""

    name: str
    lower: Fraction | None = None
    upper: Fraction | None = None
    values: tuple[ScalarValue, ...] | None = None
    time_lower: TimeBound | None = None  # bounds on a DATE/TIMESTAMP column (quantiles, MIN/MAX)
    time_upper: TimeBound | None = None
    unit_lower: Fraction | None = None  # bounds on one unit's total in one group (SUM/AVG), GoogleSQL's
    unit_upper: Fraction | None = None  # contribution_bounds_per_group
    unique: bool = False  # declared one row per value (a key path's referenced column; checked at start-up)
    max_distinct: int | None = None  # distinct values one unit keeps per group in COUNT/SUM(DISTINCT col); default max_rows

    @property
    def unit_bounded(self) -> bool:
        """True when per-unit bounds are declared: ``SUM(col)``'s per-(unit, group) total is clamped
        to ``[unit_lower, unit_upper]`` instead of ``max_rows`` clamped rows."""
        return self.unit_lower is not None and self.unit_upper is not None

    @property
    def bounded(self) -> bool:
        """True when both numeric bounds are declared, so the column may be summed."""
        return self.lower is not None and self.upper is not None

    @property
    def time_bounded(self) -> bool:
        """True when date/timestamp bounds are declared (``lower = 2020-01-01``): the column has
        quantiles and MIN/MAX, never sums."""
        return self.time_lower is not None and self.time_upper is not None


@dataclass(frozen=True)
class UnitStep:
    """One step of a key path: the table's column ``via`` equals the unique column ``column`` of
    the private table ``table`` (qualified ``schema.table``), whose row's unit the row takes."""

    via: str
    table: str
    column: str


@dataclass(frozen=True)
class TablePolicy:
    """One table of the policy. Private tables have a privacy unit; public ones are queried as is."""

    name: str  # as written in the policy, e.g. "visits" or "sales.orders"
    schema: str  # logical schema shown to clients ("public" when unqualified)
    table: str  # table name without schema
    public: bool
    privacy_unit: str | None
    max_groups: int
    max_rows: int
    columns: Mapping[str, ColumnPolicy]
    max_contributions: int | None = None  # L1 bound: rows one unit may contribute across all groups of a query
    file: Path | None = None
    columns_declared: bool = True  # False for a public table whose columns are all exposed
    spark_table: str | None = None  # Spark source only: the catalog table ([catalog.]db.table) it reads
    spark_path: str | None = None  # Spark source only: a Parquet path or URI (s3a://…, hdfs://…) the cluster reads
    # A keyed table (``privacy_unit = { via = "visit_id", references = "visits.visit_id" }``):
    # ``privacy_unit`` is :data:`KEYED_UNIT`, ``unit_path`` the resolved steps to the table whose
    # column ``unit_root`` is the unit; ``unit_reference`` the first step as written (via, table, column).
    unit_path: tuple[UnitStep, ...] = ()
    unit_root: str | None = None
    unit_reference: tuple[str, str, str] | None = None

    @property
    def qualified(self) -> str:
        """``schema.table`` as shown to clients."""
        return f"{self.schema}.{self.table}"

    @property
    def keyed(self) -> bool:
        """True when the table's rows belong to a unit through a key path (no unit column of its own)."""
        return bool(self.unit_path)

    @property
    def unit_label(self) -> str:
        """The privacy unit for messages: the column, or ``patient_id (through visit_id → public.visits.visit_id)``."""
        if not self.unit_path:
            return self.privacy_unit or "unit"
        path = " → ".join(f"{s.table}.{s.column}" for s in self.unit_path)
        return f"{self.unit_root} (through {self.unit_path[0].via} → {path})"


@dataclass(frozen=True)
class Budget:
    """An (ε, δ) budget; ``window_seconds`` replenishes it every window, None means lifetime."""

    epsilon: Fraction
    delta: Fraction
    window_seconds: float | None = None


@dataclass(frozen=True)
class UserPolicy:
    """A user allowed to connect, with an optional SCRAM verifier and per-user budget overrides."""

    name: str
    password: str | None
    budget: Budget
    session_epsilon: Fraction | None
    default_epsilon: Fraction | None = None  # this user's dp.epsilon when the session sets none


@dataclass(frozen=True)
class ReplaySettings:
    """``[privacy] replay*``: answering an identical query again with its stored noisy answer, free.

    ``mode`` is ``"user"`` (an answer is replayed only to the user who paid for it), ``"global"``
    (to any user: the global filter already covers every release) or ``"off"``. A stored answer
    is replayed for ``window_seconds`` after its charge; for sources whose data can change while
    dpsql serves them (PostgreSQL) for at most ``source_ttl_seconds``. ``max_bytes`` bounds the
    stored answers of one replay scope (a user, or everyone under ``"global"``).
    """

    mode: Literal["user", "global", "off"] = "user"
    window_seconds: float = 7 * 86400.0
    source_ttl_seconds: float = 3600.0
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class PrivacySettings:
    """The ``[privacy]`` section."""

    accounting: Accounting = "zcdp"
    default_epsilon: Fraction = Fraction(1)
    default_delta: Fraction = Fraction(1, 10**7)
    max_epsilon_per_query: Fraction = Fraction(2)
    max_delta_per_query: Fraction = Fraction(1, 10**5)
    min_epsilon_per_query: Fraction = Fraction(1, 100)  # probes are never free (docs/privacy.md)
    min_delta_per_query: Fraction = Fraction(1, 10**12)  # under zcdp a tiny δ shrinks the ρ charged for ε


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` section."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 6432
    auth: Literal["scram-sha-256", "trust"] = "scram-sha-256"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    audit_log: Path | None = None  # None: dpsql-audit.jsonl beside the policy file
    audit_enabled: bool = True
    metrics_host: str | None = None  # [server] metrics_listen: the Prometheus endpoint, off when None
    metrics_port: int | None = None

    @property
    def loopback(self) -> bool:
        """True when the server listens on a loopback address only."""
        return _is_loopback(self.listen_host)


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` section: resource limits (all optional, with safe defaults)."""

    statement_timeout: float = 30.0
    max_connections: int = 64
    max_connections_per_user: int | None = None  # None: max(1, max_connections // 4)
    max_statement_bytes: int = 64 * 1024
    max_ast_nodes: int = 2000
    max_joins: int = 3
    max_released_groups: int = 10_000
    memory_limit: str = "4GB"
    threads: int = 2
    queries_per_minute: int = 600
    concurrent_queries_per_user: int = 4  # more of one user's private queries wait (until statement_timeout)

    @property
    def connections_per_user(self) -> int:
        """Connections one user may hold at once: ``max_connections_per_user``, by default a
        quarter of ``max_connections`` (at least 1), so one user cannot take every slot."""
        if self.max_connections_per_user is not None:
            return self.max_connections_per_user
        return max(1, self.max_connections // 4)


@dataclass(frozen=True)
class LedgerSettings:
    """Where the budget ledger lives: a SQLite path (default) or a PostgreSQL URL."""

    path: Path | None = None
    url: str | None = None


@dataclass(frozen=True)
class Source:
    """The data source: a DuckDB file (or in-memory with file-mapped tables), an upstream
    PostgreSQL, or a Spark Connect server (``sc://host:port``, its TLS/token parameters passed
    through as Spark Connect reads them)."""

    duckdb: Path | None = None
    postgres: str | None = None
    spark: str | None = None
    spark_ansi: bool = True  # the spark.sql.ansi.enabled value dpsql pins on its Spark session


@dataclass(frozen=True)
class Policy:
    """A validated policy. Immutable; construct with :func:`load_policy` or :func:`policy_from_dict`."""

    file: Path
    source: Source
    server: ServerSettings
    privacy: PrivacySettings
    budget: Budget
    session_epsilon: Fraction | None
    global_budget: Budget | None
    users: Mapping[str, UserPolicy]
    tables: Mapping[str, TablePolicy]  # keyed by qualified "schema.table"
    ledger: LedgerSettings
    limits: Limits = field(default_factory=Limits)
    replay: ReplaySettings = field(default_factory=ReplaySettings)

    def table(self, name: str) -> TablePolicy | None:
        """The table called ``name`` (``t`` or ``schema.t``, case-insensitive), or None."""
        key = name.lower()
        if "." not in key:
            key = f"public.{key}"
        return self.tables.get(key)

    def user(self, name: str) -> UserPolicy | None:
        """The user called ``name``, or None if the policy does not list them."""
        return self.users.get(name)

    def require_passwords(self) -> None:
        """Serving over the wire with ``[server] auth = 'scram-sha-256'`` needs a SCRAM verifier for
        every user: PolicyError naming the first user without one. Passwords belong to serving
        only; in-process use (``dpsql query``, :mod:`dpsql.api`, :mod:`dpsql.embed`) needs none."""
        if self.server.auth != "scram-sha-256":
            return
        for name, u in self.users.items():
            if u.password is None:
                raise PolicyError(str(self.file), f"users.{name}.password",
                                  "is required to serve with [server] auth = 'scram-sha-256' (make one with `dpsql passwd`)")

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger path: configured, or ``dpsql-ledger.sqlite`` beside the policy file."""
        if self.ledger.path is not None:
            return self.ledger.path
        return self.file.parent / "dpsql-ledger.sqlite"

    @property
    def audit_path(self) -> Path | None:
        """The audit log (R32): configured, or ``dpsql-audit.jsonl`` beside the policy file; None when off."""
        if not self.server.audit_enabled:
            return None
        if self.server.audit_log is not None:
            return self.server.audit_log
        return self.file.parent / "dpsql-audit.jsonl"

    def default_epsilon_for(self, user: str) -> Fraction:
        """The ε of a query of ``user`` whose session sets no ``dp.epsilon``: the user's own
        ``default_epsilon``, else ``[privacy] default_epsilon``."""
        up = self.users.get(user)
        if up is not None and up.default_epsilon is not None:
            return up.default_epsilon
        return self.privacy.default_epsilon


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Reader:
    """Reads one TOML table, turning every problem into a PolicyError naming file and key."""

    def __init__(self, file: str, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise PolicyError(file, prefix, f"must be a table, got {_tname(data)}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> PolicyError:
        return PolicyError(self.file, self.key(name), problem)

    def get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def sub(self, name: str, *, required: bool = False) -> _Reader | None:
        v = self.get(name)
        if v is None:
            if required:
                raise self.fail(name, "is required")
            return None
        return _Reader(self.file, self.key(name), v)

    def string(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str | None:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail(name, f"must be a string, got {_tname(v)}")
        if choices and v not in choices:
            raise self.fail(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
        return v

    def number(
        self,
        name: str,
        default: Fraction | None = None,
        *,
        positive: bool = False,
        at_most: Fraction | None = None,
    ) -> Fraction | None:
        v = self.get(name)
        if v is None:
            return default
        f = _to_fraction(v)
        if f is None:
            raise self.fail(name, f"must be a finite number, got {v!r}")
        if positive and f <= 0:
            raise self.fail(name, f"must be greater than 0, got {v!r}")
        if at_most is not None and f > at_most:
            raise self.fail(name, f"must be at most {float(at_most):g}, got {v!r}")
        return f

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        v = self.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(name, f"must be an integer, got {v!r}")
        if v < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {v}")
        return v

    def duration(self, name: str, default: float | None = None) -> float | None:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail(name, f"must be a duration string like '7d', got {v!r}")
        try:
            seconds = parse_duration(v)
        except ValueError as e:
            raise self.fail(name, str(e)) from None
        if seconds <= 0:
            raise self.fail(name, f"must be longer than zero, got {v!r}")
        return seconds

    def boolean(self, name: str, default: bool) -> bool:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(name, f"must be true or false, got {v!r}")
        return v

    def finish(self, allowed_subtables: tuple[str, ...] = ()) -> None:
        for k in self.data:
            if k not in self.seen and k not in allowed_subtables:
                raise self.fail(k, "unknown key (check the spelling against DESIGN §2)")


def _tname(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(type(v), type(v).__name__)


def _to_fraction(v: Any) -> Fraction | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return Fraction(v) if isinstance(v, int) else Fraction(str(v))


def _read_time_bounds(cr: _Reader) -> tuple[TimeBound | None, TimeBound | None]:
    """Date or local date-time bounds (TOML ``lower = 2020-01-01`` / ``2020-01-01T00:00:00``), or
    (None, None) when neither bound is a date. Both must be of one kind, without a UTC offset, and
    lower ≤ upper."""
    lo, hi = cr.get("lower"), cr.get("upper")
    if not isinstance(lo, _dt.date) and not isinstance(hi, _dt.date):
        return None, None
    if lo is None or hi is None:
        raise cr.fail("upper" if lo is not None else "lower", "lower and upper must be declared together")
    for name, v in (("lower", lo), ("upper", hi)):
        if isinstance(v, _dt.time) or not isinstance(v, _dt.date):
            raise cr.fail(name, f"must be a date or a date-time like the other bound, got {v!r}")
        if isinstance(v, _dt.datetime) and v.utcoffset() is not None:
            raise cr.fail(name, "must be a local date-time without a UTC offset (e.g. 2020-01-01T00:00:00)")
    if isinstance(lo, _dt.datetime) != isinstance(hi, _dt.datetime):
        raise cr.fail("upper", "lower and upper must both be dates or both be date-times")
    if lo > hi:
        raise cr.fail("lower", f"({lo.isoformat()}) is after upper ({hi.isoformat()})")
    return lo, hi


def _read_unit_bounds(cr: _Reader, time_column: bool) -> tuple[Fraction | None, Fraction | None]:
    """``unit_lower``/``unit_upper``: bounds on one unit's total of the column in one group.

    Both or neither, numbers, ``unit_lower ≤ unit_upper``, below 2^62 in absolute value, and not on
    a date/timestamp column (they bound sums).
    """
    lo, hi = cr.number("unit_lower"), cr.number("unit_upper")
    if (lo is None) != (hi is None):
        raise cr.fail("unit_upper" if lo is not None else "unit_lower", "unit_lower and unit_upper must be declared together")
    if lo is None or hi is None:
        return None, None
    if time_column:
        raise cr.fail("unit_lower", "per-unit bounds bound sums; a date/timestamp column cannot carry them")
    if lo > hi:
        raise cr.fail("unit_lower", f"({float(lo):g}) is above unit_upper ({float(hi):g})")
    if max(abs(lo), abs(hi)) >= 2**62:
        raise cr.fail("unit_upper", "bounds must be below 2^62 in absolute value")
    return lo, hi


def _g(x: Fraction) -> str:
    """A number for messages (``1e-12``, ``0.01``)."""
    return f"{float(x):g}"


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises PolicyError naming the file, key and problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise PolicyError(str(p), "", f"cannot read the file ({e.strerror or e})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(str(p), "", "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(str(p), "", f"is not valid TOML: {e}") from None
    return policy_from_dict(data, p.resolve())


def policy_from_dict(data: Mapping[str, Any], file: str | Path = "<policy>") -> Policy:
    """Validate a parsed policy mapping; relative paths resolve against ``file``'s directory."""
    fpath = Path(file)
    fname = str(file)
    base = fpath.parent if fpath.name else Path(".")
    root = _Reader(fname, "", dict(data))

    # [source]
    source = Source()
    if (s := root.sub("source")) is not None:
        duck = s.string("duckdb")
        pg = s.string("postgres")
        spark = s.string("spark")
        if duck and pg:
            raise s.fail("postgres", "set either duckdb or postgres, not both")
        if spark and (duck or pg):
            raise s.fail("spark", "set only one of duckdb, postgres and spark")
        if pg is not None and not pg.startswith(("postgresql://", "postgres://")):
            raise s.fail("postgres", "must be a postgresql:// URL")
        if spark is not None and not re.match(r"^sc://[^/;:]+(:\d+)?/?(;.*)?$", spark):
            raise s.fail("spark", "must be a Spark Connect URL, sc://host:port (parameters after ';', e.g. ;use_ssl=true;token=…)")
        ansi = s.boolean("spark_ansi", True)
        if s.has("spark_ansi") and not spark:
            raise s.fail("spark_ansi", "applies only with [source] spark")
        source = Source(duckdb=_resolve(base, duck) if duck else None, postgres=pg, spark=spark, spark_ansi=ansi)
        s.finish()

    # [server]
    server = ServerSettings()
    if (s := root.sub("server")) is not None:
        listen = s.string("listen", "127.0.0.1:6432") or "127.0.0.1:6432"
        host, port = _parse_listen(s, listen)
        auth = s.string("auth", "scram-sha-256", choices=("scram-sha-256", "trust"))
        cert = s.string("tls_cert")
        key = s.string("tls_key")
        if bool(cert) != bool(key):
            raise s.fail("tls_key" if cert else "tls_cert", "tls_cert and tls_key must be set together")
        audit_path, audit_on = _read_audit_log(s, base)
        metrics_host, metrics_port = _read_metrics_listen(s, cert is not None)
        server = ServerSettings(
            listen_host=host,
            listen_port=port,
            auth=auth,  # type: ignore[arg-type]
            tls_cert=_resolve(base, cert) if cert else None,
            tls_key=_resolve(base, key) if key else None,
            audit_log=audit_path,
            audit_enabled=audit_on,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
        if auth == "trust" and not server.loopback:
            raise s.fail("auth", f"'trust' is only allowed on a loopback address, not {host!r}")
        if not server.loopback and server.tls_cert is None:
            raise s.fail("listen", f"listening on {host!r} (beyond loopback) requires tls_cert and tls_key")
        s.finish()

    # [privacy]
    privacy = PrivacySettings()
    ledger = LedgerSettings()
    replay = ReplaySettings()
    if (s := root.sub("privacy")) is not None:
        replay = _read_replay(s)
        accounting = s.string("accounting", "zcdp", choices=("zcdp", "basic"))
        dflt_eps = s.number("default_epsilon", Fraction(1), positive=True)
        dflt_delta = s.number("default_delta", Fraction(1, 10**7), positive=True, at_most=Fraction(1, 10))
        max_eps = s.number("max_epsilon_per_query", Fraction(2), positive=True)
        max_delta = s.number("max_delta_per_query", None, positive=True, at_most=Fraction(1, 10))
        min_eps = s.number("min_epsilon_per_query", PrivacySettings.min_epsilon_per_query, positive=True)
        min_delta = s.number("min_delta_per_query", PrivacySettings.min_delta_per_query, positive=True, at_most=Fraction(1, 10))
        assert dflt_eps is not None and dflt_delta is not None and max_eps is not None
        assert min_eps is not None and min_delta is not None
        if max_delta is None:
            max_delta = max(dflt_delta, Fraction(1, 10**5))
        if min_eps > max_eps:
            raise s.fail("min_epsilon_per_query", f"({_g(min_eps)}) exceeds max_epsilon_per_query ({_g(max_eps)})")
        if min_delta > max_delta:
            raise s.fail("min_delta_per_query", f"({_g(min_delta)}) exceeds max_delta_per_query ({_g(max_delta)})")
        if dflt_eps > max_eps:
            raise s.fail("default_epsilon", f"({_g(dflt_eps)}) exceeds max_epsilon_per_query ({_g(max_eps)})")
        if dflt_eps < min_eps:
            raise s.fail("default_epsilon", f"({_g(dflt_eps)}) is below min_epsilon_per_query ({_g(min_eps)})")
        if dflt_delta > max_delta:
            raise s.fail("default_delta", f"({_g(dflt_delta)}) exceeds max_delta_per_query ({_g(max_delta)})")
        if dflt_delta < min_delta:
            raise s.fail("default_delta", f"({_g(dflt_delta)}) is below min_delta_per_query ({_g(min_delta)})")
        privacy = PrivacySettings(accounting, dflt_eps, dflt_delta, max_eps, max_delta, min_eps, min_delta)  # type: ignore[arg-type]
        if (lg := s.sub("ledger")) is not None:
            lpath = lg.string("path")
            url = lg.string("url")
            if lpath and url:
                raise lg.fail("url", "set either path or url, not both")
            if url is not None and not url.startswith(("postgresql://", "postgres://")):
                raise lg.fail("url", "must be a postgresql:// URL")
            ledger = LedgerSettings(path=_resolve(base, lpath) if lpath else None, url=url)
            lg.finish()
        s.finish()

    # [budget]
    b = root.sub("budget", required=True)
    assert b is not None
    budget = _read_budget(b, None)
    session_eps = b.number("session_epsilon", None, positive=True)
    global_budget = None
    if (g := b.sub("global")) is not None:
        global_budget = _read_budget(g, None)
        g.finish()
    b.finish()

    # [users.*]
    users: dict[str, UserPolicy] = {}
    if (u := root.sub("users")) is not None:
        for name in list(u.data):
            ur = u.sub(name)
            assert ur is not None
            if not name or len(name) > 63 or any(ord(c) < 32 for c in name):
                raise u.fail(name, "is not a valid user name")
            pw = ur.string("password")
            if pw is not None and not _SCRAM.match(pw):
                raise ur.fail("password", "must be a SCRAM-SHA-256 verifier (make one with `dpsql passwd`)")
            if pw is not None and int(_SCRAM.match(pw).group(1)) < 4096:  # type: ignore[union-attr]
                raise ur.fail("password", "SCRAM iteration count must be at least 4096")
            ubudget = _read_budget(ur, budget)
            usess = ur.number("session_epsilon", session_eps, positive=True)
            udefault = _read_user_default_epsilon(ur, privacy, usess)
            ur.finish()
            users[name] = UserPolicy(name=name, password=pw, budget=ubudget, session_epsilon=usess, default_epsilon=udefault)
    if not users:
        raise root.fail("users", "list at least one user ([users.NAME]); only listed users may connect")

    # [tables.*]
    tables: dict[str, TablePolicy] = {}
    t = root.sub("tables", required=True)
    assert t is not None
    for name in list(t.data):
        tr = t.sub(name)
        assert tr is not None
        tp = _read_table(tr, name, base, spark=source.spark is not None)
        if tp.qualified in tables:
            raise t.fail(name, f"declares {tp.qualified} a second time")
        tables[tp.qualified] = tp
    if not tables:
        raise root.fail("tables", "declare at least one table")
    _resolve_unit_paths(str(fpath), tables)

    # [limits]
    limits = Limits()
    if (lr := root.sub("limits")) is not None:
        mem = lr.string("memory_limit", "4GB") or "4GB"
        if not _SIZE.match(mem):
            raise lr.fail("memory_limit", f"must be a size like '4GB', got {mem!r}")
        per_user = lr.integer("max_connections_per_user", 0) or None
        if per_user is not None and per_user > lr.integer("max_connections", 64):
            raise lr.fail("max_connections_per_user", f"({per_user}) exceeds max_connections ({lr.integer('max_connections', 64)})")
        limits = Limits(
            statement_timeout=lr.duration("statement_timeout", 30.0) or 30.0,
            max_connections=lr.integer("max_connections", 64),
            max_connections_per_user=per_user,
            max_statement_bytes=lr.integer("max_statement_bytes", 64 * 1024, minimum=64),
            max_ast_nodes=lr.integer("max_ast_nodes", 2000, minimum=10),
            max_joins=lr.integer("max_joins", 3, minimum=0),
            max_released_groups=lr.integer("max_released_groups", 10_000),
            memory_limit=mem,
            threads=lr.integer("threads", 2),
            queries_per_minute=lr.integer("queries_per_minute", 600),
            concurrent_queries_per_user=lr.integer("concurrent_queries_per_user", 4),
        )
        lr.finish()

    root.finish()
    policy = Policy(
        file=fpath,
        source=source,
        server=server,
        privacy=privacy,
        budget=budget,
        session_epsilon=session_eps,
        global_budget=global_budget,
        users=users,
        tables=tables,
        ledger=ledger,
        limits=limits,
        replay=replay,
    )
    from dpsql.accountant.capacity import check_ledger_capacity  # here: the accountant imports this module

    check_ledger_capacity(policy)
    return policy


def _parse_listen(s: _Reader, listen: str, key: str = "listen") -> tuple[str, int]:
    host, sep, port_s = listen.rpartition(":")
    if not sep or not port_s.isdigit():
        raise s.fail(key, f"must be HOST:PORT, got {listen!r}")
    host = host.strip("[]")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise s.fail(key, f"port {port} is out of range")
    return host or "127.0.0.1", port


_REPLAY_MODES = ("user", "global", "off")


def parse_size(text: str) -> int:
    """Bytes in a size such as ``"64MB"`` or ``"1GiB"`` (KB/MB/… are powers of 1000, KiB/MiB/… of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size like '64MB'")
    unit = m.group(2).lower()
    scale = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    return int(float(m.group(1)) * scale[unit])


def _read_replay(s: _Reader) -> ReplaySettings:
    """``[privacy] replay``, ``replay_window``, ``replay_ttl`` and ``replay_size``."""
    mode = s.string("replay", "user", choices=_REPLAY_MODES) or "user"
    window = s.duration("replay_window", 7 * 86400.0) or 7 * 86400.0
    ttl = s.duration("replay_ttl", 3600.0) or 3600.0
    size_text = s.string("replay_size")
    size = 64 * 1024 * 1024
    if size_text is not None:
        try:
            size = parse_size(size_text)
        except ValueError as e:
            raise s.fail("replay_size", str(e)) from None
        if size < 1024:
            raise s.fail("replay_size", f"must be at least 1KiB, got {size_text!r}")
    return ReplaySettings(mode=mode, window_seconds=window, source_ttl_seconds=ttl, max_bytes=size)  # type: ignore[arg-type]


def _read_audit_log(s: _Reader, base: Path) -> tuple[Path | None, bool]:
    """``[server] audit_log``: a path (relative to the policy file), or ``false`` to turn the log off."""
    v = s.get("audit_log")
    if v is None:
        return None, True
    if v is False:
        return None, False
    if not isinstance(v, str) or not v.strip():
        raise s.fail("audit_log", f"must be a file path or false, got {v!r}")
    return _resolve(base, v), True


def _read_metrics_listen(s: _Reader, tls: bool) -> tuple[str | None, int | None]:
    """``[server] metrics_listen = "HOST:PORT"`` (port 0: any free port); beyond loopback only with TLS."""
    text = s.string("metrics_listen")
    if text is None:
        return None, None
    host, port = _parse_listen(s, text, key="metrics_listen")
    if not _is_loopback(host) and not tls:
        raise s.fail("metrics_listen", f"serving metrics on {host!r} (beyond loopback) requires tls_cert and tls_key")
    return host, port


def _read_user_default_epsilon(ur: _Reader, privacy: PrivacySettings, session_cap: Fraction | None) -> Fraction | None:
    """``[users.NAME] default_epsilon``: within ``max_epsilon_per_query`` and the user's session cap."""
    v = ur.number("default_epsilon", None, positive=True)
    if v is None:
        return None
    if v > privacy.max_epsilon_per_query:
        limit = float(privacy.max_epsilon_per_query)
        raise ur.fail("default_epsilon", f"({float(v):g}) exceeds [privacy] max_epsilon_per_query ({limit:g})")
    if session_cap is not None and v > session_cap:
        raise ur.fail("default_epsilon", f"({float(v):g}) exceeds the user's session_epsilon ({float(session_cap):g})")
    return v


def _read_budget(r: _Reader, inherit: Budget | None) -> Budget:
    eps = r.number("epsilon", inherit.epsilon if inherit else None, positive=True)
    delta = r.number("delta", inherit.delta if inherit else None, positive=True, at_most=Fraction(1, 10))
    if eps is None:
        raise r.fail("epsilon", "is required")
    if delta is None:
        raise r.fail("delta", "is required")
    window = r.duration("window", inherit.window_seconds if inherit else None)
    return Budget(epsilon=eps, delta=delta, window_seconds=window)


def _read_table(tr: _Reader, name: str, base: Path, *, spark: bool = False) -> TablePolicy:
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
        raise PolicyError(tr.file, tr.prefix, "table names must be NAME or SCHEMA.NAME made of letters, digits and _")
    schema, table = (parts[0].lower(), parts[1].lower()) if len(parts) == 2 else ("public", parts[0].lower())
    public = tr.boolean("public", False)
    reference: tuple[str, str, str] | None = None
    if isinstance(tr.data.get("privacy_unit"), dict) and not public:
        reference = _read_unit_reference(tr)
        unit: str | None = KEYED_UNIT
    else:
        unit = tr.string("privacy_unit")
    file = tr.string("file")
    fpath = _resolve(base, file) if file else None
    if fpath is not None and fpath.suffix.lower() not in (".parquet", ".csv", ".tsv") and not str(fpath).endswith(
        (".csv.gz", ".tsv.gz")
    ):
        raise tr.fail("file", f"must be a .parquet or .csv file, got {file!r}")
    spark_table = tr.string("spark_table")
    spark_path = tr.string("spark_path")
    for key, value in (("spark_table", spark_table), ("spark_path", spark_path)):
        if value is not None and not spark:
            raise tr.fail(key, "applies only with [source] spark")
    if sum(v is not None for v in (file, spark_table, spark_path)) > 1:
        raise tr.fail("file", "set at most one of file, spark_table and spark_path")
    if spark_table is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$", spark_table):
        raise tr.fail("spark_table", "must be [catalog.]database.table made of letters, digits and _")
    if spark and fpath is not None and fpath.suffix.lower() != ".parquet":
        raise tr.fail("file", "the Spark source reads Parquet files only")
    if spark_path is not None and (not spark_path or "`" in spark_path or any(ord(c) < 32 for c in spark_path)):
        raise tr.fail("spark_path", "must be a Parquet path or URI without backquotes or control characters")
    max_groups = tr.integer("max_groups", 1)
    max_rows = tr.integer("max_rows", 1)
    max_contributions = tr.integer("max_contributions", 0) if tr.has("max_contributions") else None
    if public:
        if unit is not None:
            raise tr.fail("privacy_unit", "a public table has no privacy unit; remove one of the two")
        for k in ("max_groups", "max_rows", "max_contributions"):
            if tr.has(k):
                raise tr.fail(k, "applies only to private tables")
    else:
        if unit is None:
            raise tr.fail("privacy_unit", "is required for a private table (or set public = true)")
        if not _IDENT.match(unit):
            raise tr.fail("privacy_unit", f"{unit!r} is not a column name")
        if reference is None and unit.lower() == KEYED_UNIT:
            raise tr.fail("privacy_unit", f"{KEYED_UNIT} is reserved for the unit of a keyed table")
    via = reference[0] if reference is not None else None
    columns: dict[str, ColumnPolicy] = {}
    cols = tr.sub("columns")
    if cols is not None:
        for cname in list(cols.data):
            if not _IDENT.match(cname):
                raise cols.fail(cname, "is not a valid column name")
            if cname.lower() == KEYED_UNIT:
                raise cols.fail(cname, f"{KEYED_UNIT} is reserved for the unit of a keyed table")
            cr = cols.sub(cname)
            assert cr is not None
            time_lower, time_upper = _read_time_bounds(cr)
            lower = None if time_lower is not None else cr.number("lower")
            upper = None if time_lower is not None else cr.number("upper")
            if (lower is None) != (upper is None):
                raise cr.fail("upper" if lower is not None else "lower", "lower and upper must be declared together")
            if lower is not None and upper is not None and lower > upper:
                raise cr.fail("lower", f"({float(lower):g}) is above upper ({float(upper):g})")
            if lower is not None and upper is not None and max(abs(lower), abs(upper)) >= 2**62:
                raise cr.fail("upper", "bounds must be below 2^62 in absolute value")
            unit_lower, unit_upper = _read_unit_bounds(cr, time_lower is not None)
            max_distinct = cr.integer("max_distinct", 1, minimum=1) if cr.has("max_distinct") else None
            if max_distinct is not None and max_distinct > MAX_DISTINCT:
                raise cr.fail("max_distinct", f"must be at most {MAX_DISTINCT}, got {max_distinct}")
            values = cr.get("values")
            vals: tuple[ScalarValue, ...] | None = None
            if values is not None:
                if not isinstance(values, list) or not values:
                    raise cr.fail("values", "must be a non-empty array of public values")
                kinds = {type(v) for v in values}
                categories = {"number" if k in (int, float) else k.__name__ for k in kinds}
                if not kinds <= {str, int, float, bool} or len(categories) > 1:
                    raise cr.fail("values", "must be strings, numbers or booleans, all of one kind")
                if len(set(values)) != len(values):
                    raise cr.fail("values", "lists a value twice")
                vals = tuple(values)
            unique = cr.boolean("unique", False)
            cr.finish()
            bounds_declared = lower is not None or time_lower is not None or unit_lower is not None
            if unit is not None and cname.lower() == unit.lower() and (bounds_declared or vals is not None):
                raise cr.fail("values" if vals is not None else "lower", "the privacy unit cannot carry bounds or values")
            if via is not None and cname.lower() == via and (bounds_declared or vals is not None):
                raise cr.fail("values" if vals is not None else "lower",
                              "the key column of privacy_unit (via) cannot carry bounds or values")
            if unit_lower is not None and public:
                raise cr.fail("unit_lower", "applies only to private tables (a public table has no privacy unit)")
            if max_distinct is not None and public:
                raise cr.fail("max_distinct", "applies only to private tables (a public table has no privacy unit)")
            if max_distinct is not None and unit is not None and cname.lower() == unit.lower():
                raise cr.fail("max_distinct", "the privacy unit has one value per unit: COUNT(DISTINCT unit) needs no bound")
            columns[cname.lower()] = ColumnPolicy(
                cname.lower(), lower, upper, vals, time_lower, time_upper, unit_lower, unit_upper, unique=unique,
                max_distinct=max_distinct,
            )
        cols.finish()
    if unit is not None and reference is None and unit.lower() not in columns:
        columns[unit.lower()] = ColumnPolicy(unit.lower())
    if via is not None and via not in columns:
        columns[via] = ColumnPolicy(via)
    tr.finish()
    return TablePolicy(
        name=name,
        schema=schema,
        table=table,
        public=public,
        privacy_unit=unit.lower() if unit else None,
        max_groups=max_groups,
        max_rows=max_rows,
        columns=columns,
        max_contributions=max_contributions,
        file=fpath,
        columns_declared=cols is not None or not public,
        spark_table=spark_table,
        spark_path=spark_path,
        unit_reference=reference,
    )


def _read_unit_reference(tr: _Reader) -> tuple[str, str, str]:
    """``privacy_unit = { via = "visit_id", references = "visits.visit_id" }``: (via column,
    referenced table as written, referenced column), all names lower-case."""
    ur = tr.sub("privacy_unit")
    assert ur is not None
    via = ur.string("via")
    ref = ur.string("references")
    ur.finish()
    if via is None:
        raise ur.fail("via", "is required: the column of this table that holds the referenced key")
    if ref is None:
        raise ur.fail("references", 'is required: the referenced "table.column" (a unique column of a private table)')
    if not _IDENT.match(via) or via.lower() == KEYED_UNIT:
        raise ur.fail("via", f"{via!r} is not a column name")
    parts = ref.split(".")
    if len(parts) not in (2, 3) or not all(_IDENT.match(p) for p in parts):
        raise ur.fail("references", f'must be "table.column" or "schema.table.column", got {ref!r}')
    return via.lower(), ".".join(parts[:-1]).lower(), parts[-1].lower()


def _resolve_unit_paths(file: str, tables: dict[str, TablePolicy]) -> None:
    """Resolve every keyed table's key path in place (``unit_path``, ``unit_root``).

    Each step must reference a private table of the policy by a column declared ``unique = true``;
    a path may not return to a table it left (a cycle) nor take more than :data:`MAX_UNIT_PATH`
    steps. PolicyError names the keyed table's ``privacy_unit.references`` key otherwise.
    """
    for qname, tp in list(tables.items()):
        if tp.unit_reference is None:
            continue
        key = f"tables.{tp.name}.privacy_unit.references"
        steps: list[UnitStep] = []
        visited = [qname]
        cur = tp
        while cur.unit_reference is not None:
            via, ref_name, column = cur.unit_reference
            where = "" if cur is tp else f" (on the path through {cur.name})"
            ref = tables.get(ref_name if "." in ref_name else f"public.{ref_name}")
            if ref is None:
                raise PolicyError(file, key, f"table {ref_name}{where} is not in the policy")
            if ref.public:
                raise PolicyError(file, key, f"{ref.name}{where} is a public table: a row can belong to a unit only through "
                                  "a private table")
            if ref.qualified in visited:
                path = " → ".join([*(tables[v].name for v in visited), ref.name])
                raise PolicyError(file, key, f"the key path {path} is a cycle: it must end at a table with a unit column")
            cp = ref.columns.get(column)
            if cp is None:
                raise PolicyError(file, key, f"column {column!r}{where} is not declared in tables.{ref.name}.columns")
            if not cp.unique:
                raise PolicyError(file, key, f"{ref.name}.{column}{where} is not declared unique: declare "
                                  f"tables.{ref.name}.columns.{column} = {{ unique = true }} (one row of {tp.name} "
                                  "must belong to at most one unit; dpsql checks it in the data at start-up)")
            steps.append(UnitStep(via, ref.qualified, column))
            if len(steps) > MAX_UNIT_PATH:
                raise PolicyError(file, key, f"the key path from {tp.name} takes more than {MAX_UNIT_PATH} steps")
            visited.append(ref.qualified)
            cur = ref
        tables[qname] = replace(tp, unit_path=tuple(steps), unit_root=cur.privacy_unit)
