"""Run a server whose SLOW_MARKER queries block (for the crash test): ``python slow_server.py POLICY STARTED_FILE``.

Prints ``PORT <n>`` once listening; serves until killed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from wirelib import slow_engine

from dpsql.proxy.server import start_in_thread


def main() -> None:
    policy, started = Path(sys.argv[1]), Path(sys.argv[2])
    engine = slow_engine(policy, started_file=started)
    running = start_in_thread(policy, listen="127.0.0.1:0", engine=engine, catalog=None)
    print(f"PORT {running.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
