"""Run inside a private network namespace (see test_server.py): ``python netns_tls.py POLICY_DIR DB``.

The namespace's loopback device also carries 192.0.2.1 (TEST-NET-1), which is not a loopback
address, so a client connecting to it is "beyond loopback" as far as the server can tell, while no
packet ever leaves the namespace. Prints one JSON line: what a plaintext and a TLS client got."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pgclient import RawClient, errors
from wirelib import DATABASE, PASSWORDS, make_self_signed_cert, write_policy

from dpsql.proxy.server import start_in_thread

ADDRESS = "192.0.2.1"


def main() -> None:
    directory, db = Path(sys.argv[1]), Path(sys.argv[2])
    cert, key = make_self_signed_cert(directory / "tls")
    policy = write_policy(directory, db, listen=f"{ADDRESS}:0", server_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    running = start_in_thread(policy, catalog=None)
    out: dict[str, object] = {"host": running.host}
    try:
        c = RawClient(ADDRESS, running.port)
        msgs = c.startup("alice", DATABASE, PASSWORDS["alice"])
        out["plaintext"] = errors(msgs)[0] if errors(msgs) else "accepted"
        import psycopg

        with psycopg.connect(host=ADDRESS, port=running.port, user="alice", dbname=DATABASE, password=PASSWORDS["alice"],
                             sslmode="require") as conn:
            out["tls"] = conn.execute("SELECT 1").fetchone()[0]  # type: ignore[index]
            out["tls_in_use"] = conn.info.pgconn.ssl_in_use
    finally:
        running.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
