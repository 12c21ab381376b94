"""The release step for 10,000 released groups: noise → post-processing → coercion/rounding.

Times ``dpsql.proxy.release.finish`` (the code path of every private query after its bounded
SQL) on the demo policy's plan of ``SELECT department, COUNT(*), AVG(cost) … GROUP BY department``
with 10,000 synthetic public groups, with and without ``DP_INTERVAL_LOW/HIGH(AVG(cost))`` and
with ``dp.rounding`` off and auto, so the cost of intervals and rounding shows next to the base.
No target: this prints where the time goes.

Run: ``.venv/bin/python bench/bench_release.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from dpsql.examples.hospital import generate
from dpsql.policy import load_policy
from dpsql.proxy import release as release_step
from dpsql.proxy.backends.duckdb import DuckDBBackend
from dpsql.proxy.engine import Engine

GROUPS = 10_000
QUERIES = {
    "plain": "SELECT department, COUNT(*) AS n, AVG(cost) AS a FROM visits GROUP BY department",
    "intervals": "SELECT department, COUNT(*) AS n, AVG(cost) AS a, DP_INTERVAL_LOW(AVG(cost)) AS lo, "
                 "DP_INTERVAL_HIGH(AVG(cost)) AS hi FROM visits GROUP BY department",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(generate(Path(tmp), patients=200, visits=1000))
        engine = Engine(policy, DuckDBBackend(policy))
        try:
            print(f"release step, {GROUPS} groups, median of {args.repeat} runs")
            for name, sql in QUERIES.items():
                rw = engine.rewrite(sql)
                plan = rw.plan
                assert plan is not None
                noise = engine.calibrate(sql, plan, Fraction(1), Fraction(1, 10**7))
                keys = [(f"d{i}",) for i in range(GROUPS)]
                columns = [k.column for k in plan.keys] + [s.column for s in plan.stats]
                rows = [(k[0], *(1000 if s.kind != "sum" else 300 * 1000 * 2048 for s in plan.stats)) for k in keys]
                for rounding in ("off", "auto"):
                    times = []
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        release_step.finish(plan, noise, columns, rows, keys, engine.post,
                                            options=release_step.ReleaseOptions(rounding=rounding))
                        times.append(time.perf_counter() - t)
                    print(f"  {name:9} rounding={rounding:4}: {1000 * statistics.median(times):8.1f} ms")
        finally:
            engine.close()


if __name__ == "__main__":
    main()
