"""Test driver: run the ``dpsql`` CLI in this process with a fault hook that SIGKILLs it at one
stage of the query path (used by test_crash.py; not a test module).

    python crash_driver.py STAGE MARKER_FILE -- <dpsql CLI arguments>

Stages: ``before_charge`` (control: nothing may be charged), ``after_charge`` (right after the
ledger commit), ``during_bounded`` (the bounded SQL is "running": the driver writes MARKER_FILE
and sleeps, the test kills it from outside), ``after_noise`` (noise drawn, nothing output),
``before_output`` (result ready, not yet printed), ``none`` (no hook).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(stage: str, marker: Path) -> None:
    """Patch the engine so that the process dies at ``stage``."""
    from dpsql.accountant.ledger import Ledger
    from dpsql.proxy import cli
    from dpsql.proxy import release as release_step
    from dpsql.proxy.backends.duckdb import DuckDBSession

    charge = Ledger.charge
    if stage == "before_charge":
        def charge_then(self: Any, *args: Any, **kwargs: Any) -> Any:
            _die()
        Ledger.charge = charge_then  # type: ignore[method-assign]
    elif stage == "after_charge":
        def charge_then(self: Any, *args: Any, **kwargs: Any) -> Any:
            charge(self, *args, **kwargs)
            _die()
        Ledger.charge = charge_then  # type: ignore[method-assign]
    elif stage == "during_bounded":
        execute = DuckDBSession.execute

        def slow(self: Any, sql: str, *, timeout: float | None = None) -> Any:
            if "__dp_rows" in sql:
                marker.write_text("running")
                time.sleep(600)  # a long-running bounded query; the test kills us from outside
            return execute(self, sql, timeout=timeout)
        DuckDBSession.execute = slow  # type: ignore[method-assign]
    elif stage == "after_noise":
        release = release_step.release

        def release_then(*args: Any, **kwargs: Any) -> Any:
            release(*args, **kwargs)
            _die()
        release_step.release = release_then  # type: ignore[assignment]
    elif stage == "before_output":
        def print_then(*args: Any, **kwargs: Any) -> None:
            _die()
        cli.print_result = print_then  # type: ignore[assignment]
    elif stage != "none":  # "none": no hook (the driver's own control)
        raise SystemExit(f"unknown stage {stage!r}")


def main() -> int:
    stage, marker = sys.argv[1], Path(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1:]
    install(stage, marker)
    from dpsql.proxy.cli import main as dpsql_main

    return dpsql_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
