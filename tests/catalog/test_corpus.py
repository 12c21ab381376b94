"""Replay the statements real clients send (tests/catalog/corpus) through the synthetic catalog.

Every statement must be routed to the catalog, run without error, and return the columns
PostgreSQL returned for it (names exactly, in order; types a text-reading client decodes alike).
"""

from __future__ import annotations

import pytest
from catalog_lib import PG16_ADDED, Statement, compatible, load_corpus

from dpsql.proxy.catalog import SyntheticCatalog
from dpsql.proxy.session_info import SessionInfo

CORPUS = load_corpus()


def test_corpus_covers_every_client() -> None:
    clients = {s.client for s in CORPUS}
    assert clients >= {"psql15", "sqlalchemy2_psycopg2", "sqlalchemy2_psycopg3", "sqlalchemy14", "pgjdbc", "dbeaver", "metabase",
                       "grafana", "tableau_psqlodbc", "asyncpg", "superset", "probes", "psql15_tab_complete"}
    assert len(CORPUS) >= 250


@pytest.mark.parametrize("st", CORPUS, ids=[s.id for s in CORPUS])
def test_replay(st: Statement, catalog: SyntheticCatalog, info: SessionInfo) -> None:
    sql, params = st.bind(catalog.table_oid)
    assert catalog.handles(sql), "not routed to the catalog"
    result = catalog.execute(sql, info, params)
    assert result.command == "SELECT"
    ours = [(c, t) for c, t in zip(result.columns, result.types, strict=True) if c not in PG16_ADDED or c in st.columns]
    assert [c for c, _ in ours] == list(st.columns)
    bad = [(c, t, pg) for (c, t), pg in zip(ours, st.types, strict=True) if not compatible(t, pg)]
    assert not bad, f"incompatible types (column, ours, PostgreSQL): {bad}"
    for row in result.rows:
        assert len(row) == len(result.columns)


@pytest.mark.parametrize("st", CORPUS, ids=[s.id for s in CORPUS])
def test_describe_matches_execute(st: Statement, catalog: SyntheticCatalog, info: SessionInfo) -> None:
    sql, params = st.bind(catalog.table_oid)
    columns, types = catalog.describe(sql, info)
    result = catalog.execute(sql, info, params)
    assert columns == result.columns
    assert all(compatible(a, b) for a, b in zip(types, result.types, strict=True))
