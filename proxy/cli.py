"""The ``dpsql`` command line (DESIGN §4).

Exit status: 0 on success, 1 on a refused or failed query, 2 on bad usage or a bad policy. Errors
go to stderr on one line that says what to do.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from dpsql.errors import DPSQLError, InvalidAuthorization, PolicyError, UnsupportedQuery

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"dpsql: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = _Parser(prog="dpsql", description="Differentially private SQL over DuckDB or PostgreSQL.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def policy_args(sp: argparse.ArgumentParser, *, source: bool = True) -> None:
        sp.add_argument("--policy", required=True, type=Path, help="the policy file (TOML)")
        if source:
            sp.add_argument("--duckdb", type=Path, help="DuckDB database file (overrides [source] duckdb)")
            sp.add_argument("--postgres", help="upstream PostgreSQL DSN (overrides [source] postgres)")

    q = sub.add_parser("query", help="run one query in-process and charge the policy's ledger")
    policy_args(q)
    q.add_argument("--user", required=True, help="the user whose budget is charged")
    q.add_argument("--epsilon", help="ε for this query (default: the policy's default_epsilon)")
    q.add_argument("--delta", help="δ for this query (default: the policy's default_delta)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("sql")

    e = sub.add_parser("explain", help="show the rewritten SQL, cost and noise of a query; spends nothing")
    policy_args(e)
    e.add_argument("--user", help="user whose settings apply (default: the first user of the policy)")
    e.add_argument("--epsilon")
    e.add_argument("--delta")
    e.add_argument("--dialect", choices=("duckdb", "postgres", "spark"), help="show the SQL for this engine")
    e.add_argument("sql")

    b = sub.add_parser("budget", help="show spent and remaining privacy budget")
    policy_args(b, source=False)
    b.add_argument("--user", help="one user (default: every user of the policy)")

    c = sub.add_parser("check", help="validate a policy file (and that it fits its data source)")
    policy_args(c)

    d = sub.add_parser("demo", help="write the example data set and policy, and run DP queries on it")
    d.add_argument("--dir", type=Path, default=Path("dpsql-demo"), help="where to write the demo (default ./dpsql-demo)")
    d.add_argument("--no-serve", action="store_true", help="run the example queries in-process and exit")
    d.add_argument("--listen", help="HOST:PORT to serve on (default from the demo policy)")

    s = sub.add_parser("serve", help="serve a policy over the PostgreSQL wire protocol")
    policy_args(s)
    s.add_argument("--listen", help="HOST:PORT (overrides [server] listen)")

    a = sub.add_parser("audit", help="the operators' audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    av = asub.add_parser("verify", help="check the audit log's hash chain (exit 0 intact, 1 broken, 2 bad usage)")
    av.add_argument("--policy", type=Path, help="check the audit log this policy keeps")
    av.add_argument("path", nargs="?", type=Path, help="check this audit log file")

    t = sub.add_parser("tune", help="suggest max_rows, max_groups and value bounds from DP histograms (charged to the operator)")
    policy_args(t)
    t.add_argument("--epsilon", default="1", help="ε of the measurement (default 1), charged to operator:NAME")
    t.add_argument("--operator", help="the operator's name in the ledger (default: the login name)")
    t.add_argument("--target", type=float, default=0.02, help="share of rows or value mass each bound may lose (default 0.02)")

    pw = sub.add_parser("passwd", help="print a SCRAM-SHA-256 verifier for the policy's [users.NAME] password")
    pw.add_argument("--iterations", type=int, default=4096)
    pw.add_argument("--stdin", action="store_true", help="read the password from standard input")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpsql`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except PolicyError as e:
        _error(e)
        return EXIT_USAGE
    except DPSQLError as e:
        _error(e)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def _error(e: DPSQLError) -> None:
    hint = f" (hint: {e.hint})" if e.hint else ""
    print(f"dpsql: ERROR {e.sqlstate}: {e.message}{hint}", file=sys.stderr)


def _apply_settings(session: Any, epsilon: str | None, delta: str | None) -> None:
    if epsilon is not None:
        session.settings.set("dp.epsilon", epsilon)
    if delta is not None:
        session.settings.set("dp.delta", delta)


def cmd_query(args: argparse.Namespace) -> int:
    """``dpsql query``: one statement in-process."""
    from dpsql.api import connect

    with connect(args.policy, args.user, duckdb=args.duckdb, postgres=args.postgres) as conn:
        _apply_settings(conn.session, args.epsilon, args.delta)
        result = conn.execute(args.sql)
    for n in result.notices:
        print(f"NOTICE: {n}", file=sys.stderr)
    print_result(result.columns, result.rows, args.format)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """``dpsql explain``: the plan, cost and noise of a query; reads no rows, spends nothing."""
    from dpsql.api import open_engine
    from dpsql.policy import load_policy
    from dpsql.proxy.explain import explain_rows

    policy = load_policy(args.policy)
    user = args.user or next(iter(policy.users))
    engine = open_engine(policy, duckdb=args.duckdb, postgres=args.postgres)
    try:
        session = engine.session(user)
        _apply_settings(session, args.epsilon, args.delta)
        if args.dialect and args.dialect != engine.backend.dialect:
            from dpsql.accountant.planner import calibrate
            from dpsql.rewriter import rewrite

            rw = rewrite(args.sql, engine.catalog, dialect=args.dialect)
            noise = calibrate(rw.plan, session.settings.epsilon, session.settings.delta, policy.privacy.accounting) if rw.plan else None
            lines = explain_rows(rw, noise, policy)
        else:
            lines = session.explain(args.sql)
        for line in lines:
            print(line)
    finally:
        engine.close()
    return EXIT_OK


def cmd_budget(args: argparse.Namespace) -> int:
    """``dpsql budget``: spent and remaining budget per user (and the global filter)."""
    import time

    from dpsql.accountant.filters import limits_for
    from dpsql.accountant.ledger import open_ledger
    from dpsql.policy import load_policy
    from dpsql.proxy.budget_view import BUDGET_COLUMNS, budget_rows

    policy = load_policy(args.policy)
    users = [args.user] if args.user else list(policy.users)
    for u in users:
        if policy.user(u) is None:
            raise InvalidAuthorization(f'user "{u}" is not in the policy', hint="list users under [users.NAME]")
    ledger = open_ledger(policy)
    rows: list[tuple[Any, ...]] = []
    try:
        now = time.time()
        seen_global = False
        for u in users:
            for r in budget_rows(ledger.status(u, "-", limits_for(policy, u), now)):
                if r[0] == "session":
                    continue
                if r[0] == "global":
                    if seen_global:
                        continue
                    seen_global = True
                rows.append((u if r[0] == "user" else "(all users)", *r))
    finally:
        ledger.close()
    cols = ("user", *tuple(c for c, _ in BUDGET_COLUMNS))
    print_result(cols, rows, "table")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """``dpsql check``: validate the policy, and that it fits its data source when one is reachable."""
    from dpsql.api import open_backend
    from dpsql.policy import load_policy
    from dpsql.proxy.unit_keys import check_unit_keys
    from dpsql.schema import build_catalog

    policy = load_policy(args.policy)
    private = [t for t in policy.tables.values() if not t.public]
    print(f"{args.policy}: policy OK — {len(policy.tables)} table(s), {len(private)} private, {len(policy.users)} user(s), "
          f"{policy.privacy.accounting} accounting")
    if policy.server.auth == "scram-sha-256" and (missing := [n for n, u in policy.users.items() if u.password is None]):
        print(f"  note: {', '.join(missing)} ha{'s' if len(missing) == 1 else 've'} no password: `dpsql serve` needs one per user "
              "with [server] auth = 'scram-sha-256' (`dpsql passwd`); in-process use needs none")
    mapped_files = any(t.file for t in policy.tables.values())
    has_source = args.duckdb or args.postgres or policy.source.duckdb or policy.source.postgres or policy.source.spark or mapped_files
    if has_source:
        backend = open_backend(policy, duckdb=args.duckdb, postgres=args.postgres)
        try:
            catalog = build_catalog(policy, backend.describe(), backend.unique_columns())
            check_unit_keys(policy, backend)
        finally:
            backend.close()
        for t in catalog.tables.values():
            kind = "public" if t.policy.public else f"private, unit {t.policy.unit_label}"
            print(f"  {t.policy.qualified} ({kind}): {', '.join(c.name for c in t.columns)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``dpsql demo``: write the example data and policy; serve it, or run queries in-process."""
    from dpsql.proxy.demo import run_demo

    return run_demo(args.dir, serve=not args.no_serve, listen=args.listen)


def cmd_serve(args: argparse.Namespace) -> int:
    """``dpsql serve``: the PostgreSQL-wire server."""
    try:
        from dpsql.proxy.server import serve
    except ImportError:
        raise UnsupportedQuery("the PostgreSQL-wire server is not part of this build yet", hint="use `dpsql query`") from None
    return serve(args.policy, duckdb=args.duckdb, postgres=args.postgres, listen=args.listen)


def cmd_audit(args: argparse.Namespace) -> int:
    """``dpsql audit verify [--policy FILE | PATH]``: 0 if the chain is intact, 1 if broken (the
    first bad line is named), 2 on bad usage (no or both sources, a missing file, the log is off)."""
    from dpsql.policy import load_policy
    from dpsql.proxy.audit import verify_chain

    if (args.policy is None) == (args.path is None):
        print("dpsql: error: give either --policy FILE or the audit log's PATH", file=sys.stderr)
        return EXIT_USAGE
    if args.policy is not None:
        path = load_policy(args.policy).audit_path
        if path is None:
            print(f"dpsql: error: {args.policy} keeps no audit log ([server] audit_log = false)", file=sys.stderr)
            return EXIT_USAGE
    else:
        path = args.path
        if not path.is_file():
            print(f"dpsql: error: {path} is not a file", file=sys.stderr)
            return EXIT_USAGE
    try:
        report = verify_chain(path)
    except OSError as e:
        print(f"dpsql: error: cannot read {path} ({e.strerror or e})", file=sys.stderr)
        return EXIT_USAGE
    if not report.ok:
        print(f"dpsql: ERROR 58000: {report.message()}", file=sys.stderr)
        return EXIT_REFUSED
    print(report.message())
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    """``dpsql passwd``: read a password and print its PostgreSQL SCRAM-SHA-256 verifier."""
    from dpsql.proxy.passwords import scram_verifier

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("dpsql: error: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    if not password:
        print("dpsql: error: empty password", file=sys.stderr)
        return EXIT_USAGE
    if args.iterations < 4096:
        print("dpsql: error: --iterations must be at least 4096", file=sys.stderr)
        return EXIT_USAGE
    verifier = scram_verifier(password, iterations=args.iterations)
    print(f'password = "{verifier}"')
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    """``dpsql tune``: DP histograms of per-unit contributions and values → suggested bounds."""
    from dpsql.api import open_engine
    from dpsql.policy import load_policy
    from dpsql.proxy.settings import parse_number
    from dpsql.proxy.tune import tune

    epsilon = parse_number("--epsilon", args.epsilon)
    if epsilon <= 0:
        raise UnsupportedQuery("--epsilon must be greater than 0", hint="dpsql tune --epsilon 1")
    if not 0 < args.target < 1:
        raise UnsupportedQuery("--target must be between 0 and 1", hint="--target 0.02")
    policy = load_policy(args.policy)
    engine = open_engine(policy, duckdb=args.duckdb, postgres=args.postgres)
    try:
        for line in tune(engine, epsilon=epsilon, operator=args.operator or getpass.getuser(), target=args.target):
            print(line)
    finally:
        engine.close()
    return EXIT_OK


_COMMANDS = {
    "tune": cmd_tune,
    "query": cmd_query,
    "explain": cmd_explain,
    "budget": cmd_budget,
    "check": cmd_check,
    "demo": cmd_demo,
    "serve": cmd_serve,
    "passwd": cmd_passwd,
    "audit": cmd_audit,
}


def format_value(v: Any) -> str:
    """A value as psql shows it (NULL as empty, floats with up to 6 significant digits)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e15 else f"{v:.6e}"
    if isinstance(v, Fraction):
        return f"{float(v):.6g}"
    return str(v)


def print_result(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> None:
    """Print rows as an aligned table, CSV or JSON lines."""
    if fmt == "json":
        for r in rows:
            plain = {c: (v if isinstance(v, int | float | str | bool) or v is None else str(v)) for c, v in zip(columns, r, strict=True)}
            print(json.dumps(plain))
        return
    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for r in rows:
            w.writerow([format_value(v) for v in r])
        return
    if not columns:
        return
    cells = [[format_value(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(" " + " | ".join(c.center(w) for c, w in zip(columns, widths, strict=True)))
    print("-" + "-+-".join("-" * w for w in widths) + "-")
    for r in cells:
        print(" " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
