"""Public-corpus conformance (issues 10 and 11): ZetaSQL's DP compliance cases, SmartNoise SQL's
PUMS validation lists and Qrlew's integration queries, run in process at a huge ε (run.py). Fails when a case's status drops below
the one recorded in expected_status.json; improvements are recorded with
``python tests/conformance/run.py --update``.

False-failure rate: a status can flip only if a released value lands outside its tolerance, which is
at least 6σ of its largest statistic's noise (two-sided discrete-Gaussian tail < 2e-9 per value;
fewer than 300 values per run, so < 1e-6 per run), or if a partition-selection outcome changes:
the unit counts get discrete noise with σ ≈ 0.002 at ε = 4e6, so a count moves by 1 or more with
probability far below 1e-9. (For VAR/STDDEV the 6σ slack is that of the largest statistic, a
heuristic bound; the statuses were stable over repeated runs.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import run  # noqa: E402


def test_no_case_regresses() -> None:
    """Every corpus case is at least as good as recorded (PASS > WRONG = REFUSED > NOT_EXPRESSIBLE),
    and every recorded case still exists."""
    results = run.run_all()
    print("\n" + run.summary(results))
    expected = run.load_expected()
    assert set(expected) == set(results), "expected_status.json must list every corpus"
    bad = run.regressions(results, expected)
    assert not bad, "conformance regressions (run `python tests/conformance/run.py` for details):\n" + "\n".join(bad)


def test_corpora_are_complete() -> None:
    """The committed corpora hold every case of their sources: 97 ZetaSQL cases, 14 + 10 SmartNoise
    queries, 54 distinct Qrlew queries."""
    import json

    zeta = json.loads(run.ZETASQL_CASES.read_text())
    assert len(zeta["cases"]) == 97 and len({c["name"] for c in zeta["cases"]}) == 97
    pums = json.loads(run.PUMS_CASES.read_text())
    assert sum(c["list"] == "valid" for c in pums["cases"]) == 14
    assert sum(c["list"] == "fail" for c in pums["cases"]) == 10
    qrlew = json.loads(run.QRLEW_CASES.read_text())
    assert len(qrlew["cases"]) == 54 and len({c["sql"] for c in qrlew["cases"]}) == 54
