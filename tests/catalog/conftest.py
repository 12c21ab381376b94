"""Fixtures for the synthetic catalog tests: a small policy, its visible schema, catalogs and sessions.

The policy mirrors the tables the corpus was captured against (tests/catalog/tools/build_corpus.py):
``visits`` (private: a unit, bounded and ``values`` columns, plus a column the policy hides),
``departments`` (public), ``sales.orders`` (schema-qualified, private) and ``pg_events`` (a policy
table whose name starts with ``pg_``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpsql.policy import Policy, policy_from_dict
from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo
from dpsql.schema import Catalog, build_catalog

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # for catalog_lib

USERS = ("alice", "bob")
DATABASE = "dpdb"

# (column, PostgreSQL type) as a data source reports them; "secret" is not in the policy.
DESCRIBED: dict[str, list[tuple[str, str]]] = {
    "public.visits": [("patient_id", "int8"), ("age", "int4"), ("cost", "float8"), ("department", "text"), ("visit_date", "date"),
                      ("secret", "text")],
    "public.departments": [("department_id", "int4"), ("name", "text")],
    "sales.orders": [("customer_id", "int8"), ("amount", "numeric"), ("placed", "timestamp")],
    "public.pg_events": [("id", "int8"), ("kind", "text")],
}
VISIBLE = {
    "public.visits": [("patient_id", "int8"), ("age", "int4"), ("cost", "float8"), ("department", "text"), ("visit_date", "date")],
    "public.departments": [("department_id", "int4"), ("name", "text")],
    "sales.orders": [("customer_id", "int8"), ("amount", "numeric"), ("placed", "timestamp")],
    "public.pg_events": [("id", "int8"), ("kind", "text")],
}


def policy_data() -> dict[str, Any]:
    """The test policy as a TOML-shaped mapping."""
    return {
        "server": {"auth": "trust"},
        "budget": {"epsilon": 10.0, "delta": 1e-6},
        "users": {u: {} for u in USERS},
        "tables": {
            "visits": {
                "privacy_unit": "patient_id",
                "columns": {
                    "age": {"lower": 0, "upper": 120},
                    "cost": {"lower": 0.0, "upper": 5000.0},
                    "department": {"values": ["cardiology", "oncology"]},
                    "visit_date": {},
                },
            },
            "departments": {"public": True},
            "sales.orders": {"privacy_unit": "customer_id", "columns": {"amount": {"lower": 0, "upper": 100}, "placed": {}}},
            "pg_events": {"public": True},
        },
    }


@pytest.fixture(scope="session")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The test policy (no data source needed: the catalog only reads the visible schema)."""
    return policy_from_dict(policy_data(), tmp_path_factory.mktemp("policy") / "policy.toml")


@pytest.fixture(scope="session")
def schema(policy: Policy) -> Catalog:
    """The policy's visible schema."""
    return build_catalog(policy, DESCRIBED)


@pytest.fixture(scope="session")
def catalog(schema: Catalog) -> Iterator[SyntheticCatalog]:
    """A synthetic catalog shared by the tests that don't change it."""
    c = SyntheticCatalog(schema, database=DATABASE, users=USERS)
    yield c
    c.close()


@pytest.fixture
def info() -> SessionInfo:
    """A fresh session of user alice."""
    return SessionInfo(user="alice", database=DATABASE, backend_pid=4242)
