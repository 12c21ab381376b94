"""The PostgreSQL frontend/backend protocol (version 3.0), shaped like the Rust ``pgwire`` crate.

Each module can be used and tested without a socket:

* :mod:`.messages` — the codec: frame decoding and every message this server reads or writes;
  knows nothing of sessions.
* :mod:`.types` — type OIDs and the text/binary encodings of values.
* :mod:`.sqltext` — a SQL lexer: statement splitting, ``$n`` placeholders, command recognition.
* :mod:`.params` — parameter type inference and binding of ``$n`` values into the parsed tree.
* :mod:`.gucs` — ``SET``/``SHOW``/``RESET`` of session settings and ``ParameterStatus`` reports.
* :mod:`.auth` — SCRAM-SHA-256 (and -PLUS) server exchanges and the login throttle.
* :mod:`.portals` — prepared statements, portals and ``DECLARE … CURSOR`` cursors.
* :mod:`.connection` — the per-connection state machine (startup, auth, simple and extended
  query, transactions, routing to the synthetic catalog or the DP engine).

The I/O loop that drives connections lives in :mod:`dpsql.proxy.server`.
"""
