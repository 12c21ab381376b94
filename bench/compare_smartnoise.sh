#!/usr/bin/env bash
# dpsql vs SmartNoise SQL — accuracy and speed tables in one run (docs/benchmarks.md, "dpsql vs SmartNoise SQL").
#   bench/compare_smartnoise.sh            the reported run: 200 runs per accuracy cell; speed at 1k, 1M and 10M rows (~32 min on 2 cores)
#   bench/compare_smartnoise.sh --quick    20 runs per cell; speed at 1k and 1M rows (~4 min)
# Other flags go to bench/compare_smartnoise.py: --only accuracy|speed, --runs N, --queries REGEX, --sizes N,N.
# SmartNoise is installed into its own virtualenv, bench/.venv-smartnoise (gitignored), never into the repo's .venv;
# the dpsql side runs in the repo's .venv. Output is also written to bench/out/smartnoise/last-run.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SN=bench/.venv-smartnoise
SMARTNOISE_SQL=1.0.10
if [[ ! -x $PY ]]; then
    echo "bench/compare_smartnoise.sh: $PY not found; set up the repo first: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
    exit 2
fi
# Same DuckDB version on both sides, so that the SmartNoise-on-DuckDB column runs on the same engine.
DUCKDB=$("$PY" -c 'import duckdb; print(duckdb.__version__)')
if ! "$SN/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('smartnoise-sql') != '$SMARTNOISE_SQL' or m.version('duckdb') != '$DUCKDB')" 2>/dev/null; then
    echo "[installing smartnoise-sql==$SMARTNOISE_SQL and duckdb==$DUCKDB into $SN]"
    BASE=$("$PY" -c 'import sys; print(sys._base_executable)')
    [[ -x $SN/bin/python ]] || "$BASE" -m venv "$SN"
    "$SN/bin/python" -m pip install --quiet --disable-pip-version-check "smartnoise-sql==$SMARTNOISE_SQL" "duckdb==$DUCKDB" pyyaml
fi
mkdir -p bench/out/smartnoise
"$PY" bench/compare_smartnoise.py "$@" 2>&1 | tee bench/out/smartnoise/last-run.txt
exit "${PIPESTATUS[0]}"
