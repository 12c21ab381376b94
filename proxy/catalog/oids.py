"""Stable synthetic OIDs for the objects a policy exposes (tables, schemas, roles, the database).

An OID is a hash of the object's kind and qualified name into ``[16384, 2**31)`` (PostgreSQL's
first user OID up to the largest signed int4, so clients that read OIDs as int4 never overflow).
The same policy gives the same OIDs in every process and across restarts; collisions between two
objects are resolved deterministically by probing the next value in sorted-name order.

>>> stable_oid("table", "public.visits") == stable_oid("table", "public.visits")
True
>>> 16384 <= stable_oid("table", "public.visits") < 2**31
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

FIRST_USER_OID = 16384
_SPAN = 2**31 - FIRST_USER_OID
BOOTSTRAP_ROLE_OID = 10  # owner of every object, as the bootstrap superuser is in PostgreSQL


def stable_oid(kind: str, name: str) -> int:
    """The OID of ``kind`` (``table``, ``schema``, ``role``, ``database``) called ``name`` before collision probing."""
    digest = hashlib.blake2b(f"dpsql:{kind}:{name}".encode(), digest_size=8).digest()
    return FIRST_USER_OID + int.from_bytes(digest, "big") % _SPAN


def assign_oids(objects: Iterable[tuple[str, str]], taken: Iterable[int] = ()) -> dict[tuple[str, str], int]:
    """OIDs for ``(kind, name)`` pairs, unique among themselves and ``taken``; deterministic for the same input set."""
    used = set(taken)
    out: dict[tuple[str, str], int] = {}
    for key in sorted(set(objects)):
        oid = stable_oid(*key)
        while oid in used:
            oid = FIRST_USER_OID + (oid - FIRST_USER_OID + 1) % _SPAN
        used.add(oid)
        out[key] = oid
    return out
