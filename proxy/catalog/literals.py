"""DuckDB SQL literals for Python values (used to fill the shadow and to render session values).

>>> sql_literal("it's"), sql_literal(None), sql_literal([1, 2]), sql_literal(True)
("'it''s'", 'NULL', '[1, 2]', 'TRUE')
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any


def sql_literal(v: Any) -> str:
    """A DuckDB literal for a Python value (strings quoted, lists as ``[…]``, dates as castable strings)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else f"CAST('{v}' AS DOUBLE)"
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "'" + "".join(f"\\x{b:02x}" for b in bytes(v)) + "'::BLOB"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(sql_literal(x) for x in v) + "]"
    if isinstance(v, dt.date | dt.time | dt.datetime):
        return "'" + v.isoformat() + "'"
    return "'" + str(v).replace("'", "''") + "'"
