"""``dpsql demo``: write the synthetic hospital data set and its policy, then show dpsql at work.

With the wire server available, the demo serves the data on loopback and prints the ``psql``
command to connect; otherwise (or with ``--no-serve``) it runs a handful of DP queries in-process
and prints the answers, what each cost and the remaining budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dpsql.errors import DPSQLError

DEMO_QUERIES: tuple[tuple[str, str], ...] = (
    ("How many visits are there?", "SELECT COUNT(*) AS visits FROM visits"),
    (
        "Visits, patients and mean cost per department (public key set: every department is listed)",
        "SELECT department, COUNT(*) AS visits, COUNT(DISTINCT patient_id) AS patients, ROUND(AVG(cost), 2) AS mean_cost "
        "FROM visits GROUP BY department ORDER BY visits DESC",
    ),
    (
        "The most frequent diagnoses (keys released only through DP partition selection)",
        "SELECT diagnosis, COUNT(*) AS n FROM visits GROUP BY diagnosis ORDER BY n DESC LIMIT 5",
    ),
    (
        "Mean length of stay of older patients, by floor (join with a public table)",
        "SELECT d.floor, AVG(v.length_of_stay) AS mean_stay, STDDEV(v.length_of_stay) AS sd_stay "
        "FROM visits v JOIN departments d ON d.department_id = v.department_id WHERE v.age >= 65 GROUP BY d.floor ORDER BY d.floor",
    ),
    ("Total cost of 2024 visits, with a lower ε", "SELECT SUM(cost) AS total_cost FROM visits WHERE visit_date >= DATE '2024-01-01'"),
)


def run_demo(directory: Path, *, serve: bool = True, listen: str | None = None) -> int:
    """Write (or reuse) the demo in ``directory``; serve it or run the example queries. Returns an exit status."""
    from dpsql.examples.hospital import DEMO_PASSWORDS, generate

    directory = directory.resolve()
    policy_path = directory / "policy.toml"
    if not (policy_path.exists() and (directory / "hospital.duckdb").exists()):
        print(f"dpsql demo: writing the synthetic hospital data set and its policy to {directory}/ …")
        policy_path = generate(directory)
    else:
        print(f"dpsql demo: reusing the data set and policy in {directory}/ (delete it to start over)")
    if serve:
        try:
            from dpsql.proxy.server import serve as serve_policy
        except ImportError:
            serve_policy = None
        if serve_policy is not None:
            user = "alice"

            def announce(host: str, port: int, database: str) -> None:
                print(f'connect with:  PGPASSWORD={DEMO_PASSWORDS[user]} psql "host={host} port={port} user={user} dbname={database}"')
                print("  (the other demo login is bob / bob-demo; try SELECT * FROM dpsql.budget; and \\d visits)", flush=True)

            return serve_policy(policy_path, listen=listen, on_listen=announce)
    return _run_queries(policy_path)


#: what the demo shows dpsql refusing (before any charge); tests/examples checks each is refused
DEMO_REFUSALS = (
    "SELECT * FROM visits",
    "SELECT MAX(patient_id) FROM visits",
    "SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id",
)


def _run_queries(policy_path: Path) -> int:
    from dpsql.api import connect
    from dpsql.proxy.cli import print_result

    print(f"policy: {policy_path}\n")
    with connect(policy_path, "alice") as conn:
        for i, (title, sql) in enumerate(DEMO_QUERIES):
            if i == len(DEMO_QUERIES) - 1:
                conn.execute("SET dp.epsilon = 0.25")
                print("SET dp.epsilon = 0.25;")
            print(f"-- {title}\n{sql};")
            try:
                result = conn.execute(sql)
            except DPSQLError as e:
                print(f"ERROR {e.sqlstate}: {e}\n")
                continue
            print_result(result.columns, result.rows)
            for n in result.notices:
                print(f"NOTICE: {n}")
            print()
        print("-- What dpsql refuses:")
        for sql in DEMO_REFUSALS:
            try:
                conn.execute(sql)
                print(f"{sql};  -- unexpectedly accepted")
            except DPSQLError as e:
                print(f"{sql};\n  ERROR {e.sqlstate}: {e}")
        print("\n-- EXPLAIN shows the cost and the noise before anything is spent:")
        for row in conn.execute("EXPLAIN SELECT department, AVG(cost) FROM visits GROUP BY department").rows[:8]:
            print(row[0])
        print("\n-- SELECT scope, epsilon_spent, epsilon_remaining, delta_remaining FROM dpsql.budget;")
        budget = conn.execute("SELECT scope, epsilon_spent, epsilon_remaining, delta_remaining FROM dpsql.budget")
        print_result(budget.columns, budget.rows)
    sys.stdout.flush()
    return 0
