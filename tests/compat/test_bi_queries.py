"""The SQL that BI tools (Superset, Metabase, Grafana, Tableau, Evidence) and pgcli send, verbatim,
over the wire (psycopg 3): each answered, or refused with the right SQLSTATE and a message that names
what the user wrote. Free answers and NOTICEs are checked against the ledger (``dpsql.budget``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from wirelib import dsn

from dpsql.proxy.server import Running

DEPARTMENTS = sorted(["emergency", "general medicine", "cardiology", "orthopedics", "pediatrics", "oncology", "neurology",
                      "obstetrics"])


class Client:
    """One connection (one dpsql session) that keeps the NOTICEs of its last statement."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.notices: list[str] = []
        conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))

    def run(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.notices = []
        return self.conn.execute(sql, params).fetchall()

    def error(self, sql: str) -> Any:
        import psycopg

        self.notices = []
        with pytest.raises(psycopg.Error) as e:
            self.conn.execute(sql)
        return e.value.diag

    def budget(self, scope: str = "session") -> tuple[float, float]:
        """(ρ spent, δ spent) of ``scope`` as dpsql.budget reports them."""
        assert scope in ("session", "user")
        rows = self.conn.execute(f"SELECT rho_spent, delta_spent FROM dpsql.budget WHERE scope = '{scope}'").fetchall()
        return float(rows[0][0]), float(rows[0][1])


@pytest.fixture
def client(compat_server: Running) -> Iterator[Client]:
    import psycopg

    with psycopg.connect(dsn(compat_server.host, compat_server.port, user="bob"), autocommit=True) as conn:
        conn.execute("SET dp.epsilon = 1")  # enough for partition selection to release the big groups
        yield Client(conn)


def _recorded_rho(notice: str) -> float:
    m = re.search(r"\(ledger: ρ=([0-9.e+-]+)", notice)
    assert m, notice
    return float(m.group(1))


# ---------------------------------------------------------------------------------- free answers

FREE = [
    # Superset's filter-values query (declared values, no aggregate)
    "SELECT department FROM public.visits GROUP BY department ORDER BY department LIMIT 1000",
    "SELECT DISTINCT department FROM visits",
    "SELECT department, sex FROM visits WHERE age > 40 GROUP BY department, sex ORDER BY 1, 2",
    "SELECT COUNT(*) AS n FROM (SELECT DISTINCT department FROM visits) AS t",
]


@pytest.mark.parametrize("sql", FREE)
def test_free_answers_charge_nothing_and_say_so(client: Client, sql: str) -> None:
    before_user = client.budget("user")
    rows = client.run(sql)
    assert client.notices and "spent nothing" in client.notices[0] and "read no private row" in client.notices[0]
    assert "ε=1" not in client.notices[0].split(";")[0]
    assert client.budget("session") == (0.0, 0.0)
    assert client.budget("user") == before_user
    if "sex" in sql:
        assert rows == [(d, s) for d in DEPARTMENTS for s in ("F", "M")]
    elif "COUNT" in sql:
        assert rows == [(8,)]
    else:
        assert sorted(r[0] for r in rows) == DEPARTMENTS


def test_public_table_distinct_is_answered_as_is(client: Client) -> None:
    rows = client.run("SELECT DISTINCT building FROM public.departments ORDER BY building")
    assert rows and all(isinstance(r[0], str) for r in rows)
    assert client.budget("session") == (0.0, 0.0)


def test_charged_notice_states_what_the_ledger_recorded(client: Client) -> None:
    client.run("SELECT COUNT(*) FROM visits WHERE age > 44")
    assert client.notices[0].startswith("dpsql: this query spent ε=1,")
    rho, delta = client.budget("session")
    assert rho > 0 and delta == 0.0
    assert _recorded_rho(client.notices[0]) == pytest.approx(rho, rel=1e-5)
    client.run("SELECT diagnosis, COUNT(*) FROM visits WHERE age > 44 GROUP BY diagnosis")  # partition selection
    rho2, delta2 = client.budget("session")
    assert _recorded_rho(client.notices[0]) == pytest.approx(rho2 - rho, rel=1e-5)
    m = re.search(r"selection δ=([0-9.e+-]+)", client.notices[0])
    assert m and float(m.group(1)) == pytest.approx(delta2, rel=1e-2)


# ---------------------------------------------------------------------------------- BI functions

ANSWERED = [
    # Superset: every dashboard time filter
    "SELECT department AS department, COUNT(*) AS count FROM public.visits WHERE visit_date >= TO_DATE('2024-01-01', "
    "'YYYY-MM-DD') AND visit_date < TO_DATE('2025-01-01', 'YYYY-MM-DD') GROUP BY department ORDER BY count DESC LIMIT 10000",
    "SELECT COUNT(*) FROM public.visits WHERE visit_date >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', "
    "'YYYY-MM-DD HH24:MI:SS.US') AND visit_date < TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
    "SELECT date_part('year', visit_date) AS y, COUNT(*) FROM visits GROUP BY 1",
    "SELECT EXTRACT(QUARTER FROM visit_date) AS q, COUNT(*) FROM visits GROUP BY 1",
    "SELECT COUNT(*) FROM visits WHERE visit_date >= make_date(2024, 1, 1)",
    "SELECT COUNT(*) FROM visits WHERE age(visit_date, DATE '2020-01-01') > INTERVAL '2 years'",
    "SELECT COUNT(*) FROM visits WHERE age(visit_date) < INTERVAL '3 years 6 months'",
    "SELECT COUNT(*) FROM visits WHERE visit_date > current_date - interval '5 years'",
    "SELECT COUNT(*) FROM visits WHERE visit_date < now() AND visit_date + INTERVAL '1 day' < now() + INTERVAL '1 day'",
    "SELECT COALESCE(sex, 'unknown') AS s, COUNT(*) FROM visits GROUP BY 1",
    "SELECT SUM(NULLIF(length_of_stay, 0)) AS s FROM visits",
    "SELECT department, COALESCE(AVG(cost), 0) AS avg_cost FROM visits GROUP BY department",
    "SELECT NULLIF(COUNT(*), 0) AS n FROM visits WHERE COALESCE(age, 0) > 10",
    "SELECT COUNT(*) FROM visits WHERE department = ANY(ARRAY['oncology', 'cardiology'])",
    "SELECT COUNT(*) FROM visits WHERE department = ANY('{oncology,cardiology}')",
    "SELECT COUNT(*) FROM visits WHERE department <> ALL(ARRAY['oncology'])",
    "SELECT COUNT(*) FROM visits WHERE age > ALL(ARRAY[10, 20]) AND age < ANY(ARRAY[60, 70])",
    "SELECT COUNT(*) FROM visits WHERE department = E'oncology' OR department = E'cardi\\x6flogy'",
    "SELECT COUNT(*) FROM visits WHERE department = $$oncology$$ OR department = $tag$cardiology$tag$",
    "SELECT COUNT(*) FROM visits WHERE department = U&'onc\\006flogy'",
    "SELECT width_bucket(age, 0, 100, 10) AS bucket, COUNT(*) FROM visits GROUP BY 1",
    "SELECT width_bucket(cost, 5000, 0, 4) AS bucket, COUNT(*) FROM visits GROUP BY 1",
    "SELECT count(diagnosis ORDER BY diagnosis) FROM visits",
    "SELECT t.x, COUNT(*) FROM visits CROSS JOIN public.departments t(x, y) GROUP BY t.x",
]


@pytest.mark.parametrize("sql", ANSWERED)
def test_bi_functions_answered(client: Client, sql: str) -> None:
    rows = client.run(sql)
    assert rows
    # charged, or the stored answer of an identical bounded query (ANY('{…}') and ARRAY[…] rewrite alike)
    assert client.notices and client.notices[0].startswith(("dpsql: this query spent", "dpsql: replayed"))


# pattern → what PostgreSQL 16 prints for TIMESTAMP '2024-03-05 13:04:05.123456'
TO_CHAR = {
    "YYYY-MM": "2024-03",
    "YYYY-MM-DD": "2024-03-05",
    "YYYY-MM-DD HH24:MI:SS": "2024-03-05 13:04:05",
    'YYYY-MM-DD"T"HH24:MI:SS.MS': "2024-03-05T13:04:05.123",
    "HH24:MI:SS.US": "13:04:05.123456",
    "Mon YYYY": "Mar 2024",
    "Mon DD, YYYY": "Mar 05, 2024",
    "IYYY-IW": "2024-10",
    "Dy HH12 AM": "Tue 01 PM",
    "DDD": "065",
    "YY/MM/DD": "24/03/05",
}


@pytest.mark.parametrize("pattern", sorted(TO_CHAR))
def test_to_char_patterns(client: Client, pattern: str) -> None:
    """The patterns print what PostgreSQL prints (constant), and run on private dates."""
    assert client.run(f"SELECT TO_CHAR(TIMESTAMP '2024-03-05 13:04:05.123456', '{pattern}')") == [(TO_CHAR[pattern],)]
    rows = client.run(f"SELECT COUNT(*) AS n FROM visits WHERE TO_CHAR(visit_date, '{pattern}') >= '0'")
    assert len(rows) == 1 and isinstance(rows[0][0], int)


def test_to_char_groups(client: Client) -> None:
    rows = client.run("SELECT TO_CHAR(visit_date, 'YYYY') AS y, COUNT(*) AS n FROM visits GROUP BY 1")
    assert rows and all(re.fullmatch(r"\d{4}", y) for y, _ in rows)


def test_width_bucket_values(client: Client) -> None:
    rows = client.run("SELECT width_bucket(age, 0, 100, 10) AS b, COUNT(*) FROM visits GROUP BY 1")
    assert {b for b, _ in rows} <= set(range(12))


def test_right_join_using_binds_the_public_side(client: Client) -> None:
    """``private RIGHT JOIN public USING (k) GROUP BY k`` is k of the public side: every public key
    is released (like ``GROUP BY public.k`` with ON), no partition selection."""
    using = client.run("SELECT department_id, COUNT(*) FROM visits RIGHT JOIN departments USING (department_id) "
                       "GROUP BY department_id ORDER BY 1")
    on = client.run("SELECT departments.department_id, COUNT(*) FROM visits RIGHT JOIN departments "
                    "ON visits.department_id = departments.department_id GROUP BY departments.department_id ORDER BY 1")
    assert [r[0] for r in using] == [r[0] for r in on] == list(range(1, 9))
    assert client.budget("session")[1] == 0.0  # no δ: the keys are public


REFUSED = [
    ("SELECT COUNT(*) FROM \"VISITS\"", "42P01", 'relation "VISITS" does not exist'),
    ("SELECT TO_DATE(diagnosis, 'YYYY') AS d, COUNT(*) FROM visits GROUP BY 1", "0A000", "to_date()"),
    ("SELECT TO_TIMESTAMP(diagnosis, 'YYYY') AS d, COUNT(*) FROM visits GROUP BY 1", "0A000", "to_timestamp()"),
    ("SELECT TO_CHAR(visit_date, 'FMMonth') AS m, COUNT(*) FROM visits GROUP BY 1", "0A000", "to_char() pattern 'FMMonth'"),
    ("SELECT TO_CHAR(cost, '9999') AS m, COUNT(*) FROM visits GROUP BY 1", "0A000", "to_char(visits.cost, '9999')"),
    ("SELECT COUNT(*) FROM visits WHERE make_date(2023, 2, 29) < visit_date", "22008", "2023-02-29"),
    ("SELECT COUNT(*) FROM visits WHERE visit_date < make_date(2023, length_of_stay, 1)", "0A000", "make_date()"),
    ("SELECT COUNT(*) FROM visits WHERE department = ANY(ARRAY[diagnosis])", "0A000", "ANY(…)"),
    ("SELECT width_bucket(age, 0, 0, 10) AS b, COUNT(*) FROM visits GROUP BY 1", "2201G", "lower bound cannot equal upper bound"),
    ("SELECT width_bucket(age, 0, length_of_stay, 10) AS b, COUNT(*) FROM visits GROUP BY 1", "0A000", "width_bucket()"),
    ("SELECT COUNT(*) FROM visits WHERE to_number(diagnosis, '999') > 1", "42883", "to_number()"),
    # a staged release whose outer query reads the subquery's values
    ("SELECT diagnosis, MAX(mme_inner__) FROM public.visits JOIN (SELECT diagnosis AS diagnosis__, COUNT(*) "
     "AS mme_inner__ FROM public.visits GROUP BY diagnosis ORDER BY COUNT(*) DESC LIMIT 5) AS series_limit ON diagnosis = "
     "diagnosis__ GROUP BY diagnosis", "0A000", "mme_inner__"),
    ("SELECT COUNT(*) FROM (SELECT COUNT(*) AS n FROM visits) x WHERE n IN (SELECT department_id FROM departments)",
     "0A000", 'not "departments"'),
]


@pytest.mark.parametrize(("sql", "sqlstate", "words"), REFUSED)
def test_refusals_name_what_the_user_wrote(client: Client, sql: str, sqlstate: str, words: str) -> None:
    diag = client.error(sql)
    assert diag.sqlstate == sqlstate, diag.message_primary
    assert words in diag.message_primary
    for internal in ("str_to_date", "str_to_time", "time_to_str", "WithinGroup", "UnixToTime", "Anonymous"):
        assert internal not in (diag.message_primary or "") + (diag.message_hint or "")
    assert client.budget("session") == (0.0, 0.0)  # refused before the charge


# ----------------------------------------------------------------------------------------- pgcli


def test_pgcli_catalog_arrays(client: Client) -> None:
    """pgcli's ``\\dt`` and autocomplete: ``relkind = ANY($1)`` with a text[] parameter, and a
    literal ``ANY('{r,p,""}')``."""
    sql = ("SELECT n.nspname schema_name, c.relname table_name FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
           "ON n.oid = c.relnamespace WHERE c.relkind = ANY(%s) AND n.nspname !~ '^pg_' ORDER BY 1, 2")
    rows = client.run(sql, (["r", "p", "f"],))
    assert ("public", "visits") in rows and ("public", "departments") in rows
    literal = client.run("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind = ANY('{r,p,\"\"}') ORDER BY 1")
    assert ("visits",) in literal


def test_exists_with_empty_select_list(client: Client) -> None:
    rows = client.run("SELECT EXISTS (SELECT FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = 'visits')")
    assert rows == [(True,)]


# ----------------------------------------------------------------------------------------- hints


@pytest.mark.parametrize(("column", "expected"), [
    ("patient_id", "COUNT(DISTINCT patient_id)"),
    ("department", "COUNT(department)"),
    ("diagnosis", "COUNT(diagnosis)"),
    ("visit_date", "date_trunc('month', visit_date)"),
    ("cost", "AVG(cost)"),
])
def test_hints_suggest_what_is_valid_for_the_column(client: Client, column: str, expected: str) -> None:
    diag = client.error(f"SELECT sex, {column} FROM visits GROUP BY sex")
    assert diag.sqlstate == "42501"
    hint = diag.message_hint or ""
    assert expected in hint
    if column != "cost":
        assert f"AVG({column})" not in hint and f"SUM({column})" not in hint
    if column == "patient_id":
        assert "group by it" not in hint


# ------------------------------------------------------------------ SQL over DP results (layers)

ROWCOUNT = ('SELECT COUNT(*) AS rowcount FROM (SELECT diagnosis AS diagnosis, AVG(cost) AS "AVG(cost)" FROM public.visits '
            'GROUP BY diagnosis ORDER BY "AVG(cost)" DESC LIMIT 1000) AS rowcount_qry')
VIRTUAL = ("SELECT department, SUM(n) FROM (SELECT department, COUNT(*) AS n FROM visits GROUP BY department) AS virtual_table "
           "GROUP BY department")
EVIDENCE = ("WITH root as (SELECT department, COUNT(*) AS visits, AVG(cost) AS avg_cost FROM visits GROUP BY department) "
            "SELECT COUNT(*) as rows FROM root")


def _cost_of(compat_server: Running, sql: str) -> float:
    import psycopg

    with psycopg.connect(dsn(compat_server.host, compat_server.port, user="bob"), autocommit=True) as conn:
        conn.execute("SET dp.epsilon = 1")
        c = Client(conn)
        c.run(sql)
        return c.budget("session")[0]


def test_superset_row_count(client: Client, compat_server: Running) -> None:
    rows = client.run(ROWCOUNT)
    assert len(rows) == 1 and isinstance(rows[0][0], int) and 0 <= rows[0][0] <= 1000
    assert client.notices[0].startswith("dpsql: this query spent ε=1,")
    inner = ROWCOUNT[ROWCOUNT.index("FROM (") + 6:ROWCOUNT.rindex(")")]
    assert client.budget("session")[0] == pytest.approx(_cost_of(compat_server, inner.replace("1000", "999")))


def test_superset_virtual_dataset(client: Client, compat_server: Running) -> None:
    rows = client.run(VIRTUAL)
    assert sorted(r[0] for r in rows) == DEPARTMENTS and all(isinstance(r[1], int) for r in rows)
    assert client.budget("session")[0] == pytest.approx(
        _cost_of(compat_server, "SELECT department, COUNT(*) AS n FROM visits WHERE 1 = 1 GROUP BY department"))


def test_evidence_row_count(client: Client) -> None:
    assert client.run(EVIDENCE) == [(8,)]  # declared keys: all released, so the count is public
    once = client.budget("session")[0]
    assert once > 0


@pytest.mark.parametrize("sql", [
    "SELECT * FROM (SELECT department, COUNT(*) AS n FROM visits GROUP BY department) t WHERE n > 100 ORDER BY n DESC LIMIT 3",
    "SELECT a, b FROM (SELECT department, COUNT(*) FROM visits GROUP BY department) t(a, b) ORDER BY a",
    "SELECT MAX(n) AS m, AVG(n) AS a FROM (SELECT region, COUNT(*) AS n FROM patients GROUP BY region) x",
    "WITH s AS (SELECT sex, AVG(age) AS a FROM visits GROUP BY sex) SELECT sex, ROUND(a) AS a FROM s ORDER BY sex",
])
def test_outer_queries_over_dp_results(client: Client, sql: str) -> None:
    rows = client.run(sql)
    assert rows
    assert client.notices[0].startswith("dpsql: this query spent ε=1,")


def test_outer_query_unknown_column(client: Client) -> None:
    diag = client.error("SELECT nope FROM (SELECT COUNT(*) AS n FROM visits) x")
    assert diag.sqlstate == "42703" and '"nope"' in diag.message_primary


SERIES_LIMIT = (
    "SELECT diagnosis AS diagnosis, COUNT(*) AS count FROM public.visits JOIN (SELECT diagnosis AS diagnosis__, COUNT(*) "
    "AS mme_inner__ FROM public.visits GROUP BY diagnosis ORDER BY COUNT(*) DESC LIMIT 5) AS series_limit ON diagnosis = "
    "diagnosis__ GROUP BY diagnosis"
)


def test_superset_series_limit_is_a_staged_release(client: Client, compat_server: Running) -> None:
    """Superset's series limit, verbatim: stage 1 picks ≤ 5 diagnoses, stage 2 counts them; charged
    as the two stages run by hand at ε/2 each."""
    rows = client.run(SERIES_LIMIT)
    assert 1 <= len(rows) <= 5 and all(isinstance(r[1], int) for r in rows)
    assert "in a staged release (2 releases, ε=0.5 each)" in client.notices[0]
    stage1 = SERIES_LIMIT[SERIES_LIMIT.index("(SELECT") + 1:SERIES_LIMIT.index(") AS series_limit")]
    import psycopg

    with psycopg.connect(dsn(compat_server.host, compat_server.port, user="bob"), autocommit=True) as conn:
        conn.execute("SET dp.epsilon = 0.5")
        conn.execute("SET dp.delta = 5e-8")
        by_hand = Client(conn)
        by_hand.run(stage1)
        rho_stage1 = by_hand.budget("session")[0]
    assert rho_stage1 < client.budget("session")[0] <= 3 * rho_stage1  # stage 1 plus a stage 2 at the same ε


def test_union_of_aggregates(client: Client) -> None:
    rows = client.run("SELECT 'all' AS department, COUNT(*) AS n FROM visits UNION ALL "
                      "SELECT department, COUNT(*) FROM visits GROUP BY department ORDER BY n DESC")
    assert len(rows) == 9 and rows[0][0] == "all"
    assert "in 2 releases (ε=0.5 each)" in client.notices[0]


# ------------------------------------------------------------ joins between private tables (issue 11 §1)


def test_issue_join_sql_verbatim_names_the_unknown_column(client: Client) -> None:
    """The issue's SQL verbatim: the demo's patients table has no ``age`` (visits has), so PostgreSQL's
    answer is 42703 naming ``p.age`` — no longer ``column "?" does not exist``; nothing is charged."""
    diag = client.error("SELECT v.department, AVG(p.age) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1")
    assert diag.sqlstate == "42703"
    assert diag.message_primary == 'column "p.age" does not exist'
    assert client.budget("session") == (0.0, 0.0)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT v.department, AVG(v.age) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1",
        "SELECT v.department, AVG(p.birth_year) FROM visits v JOIN patients p USING (patient_id) GROUP BY 1",
        "SELECT v.department, AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY 1",
        "SELECT p.region, COUNT(*) FROM patients p LEFT JOIN visits v ON v.patient_id = p.patient_id AND v.cost > 100 "
        "GROUP BY 1",
    ],
)
def test_private_joins_on_the_unit_are_answered(client: Client, sql: str) -> None:
    """Both private tables of the demo, joined on the unit (USING and ON): one row per declared key,
    charged once."""
    rows = client.run(sql)
    keys = sorted(r[0] for r in rows)
    assert keys == (DEPARTMENTS if "department" in sql else keys) and len(keys) in (8, 10)
    assert all(isinstance(r[1], int | float) for r in rows)
    assert client.budget("session")[0] > 0
    assert any("spent" in n for n in client.notices)


def test_private_join_on_another_column_is_refused(client: Client) -> None:
    diag = client.error("SELECT COUNT(*) FROM visits v JOIN patients p ON v.age = p.birth_year")
    assert diag.sqlstate == "0A000"
    assert "v.age = p.birth_year" in diag.message_primary and "privacy unit" in diag.message_primary
    assert client.budget("session") == (0.0, 0.0)


# ----------------------------------------------------------------------------------------- subqueries in WHERE


@pytest.mark.parametrize(
    "sql",
    [
        # Metabase: a custom question's filter, fully qualified and quoted
        'SELECT "public"."visits"."department" AS "department", COUNT(*) AS "count" FROM "public"."visits" '
        'WHERE "public"."visits"."department_id" IN (SELECT "public"."departments"."department_id" FROM "public"."departments" '
        'WHERE "public"."departments"."floor" > 2) GROUP BY "public"."visits"."department" ORDER BY "public"."visits"."department" ASC',
        # Superset: a virtual dataset's WHERE with a correlated EXISTS over a dimension
        "SELECT department AS department, AVG(cost) AS \"AVG(cost)\" FROM public.visits AS v WHERE NOT EXISTS "
        "(SELECT 1 FROM public.departments AS d WHERE d.department_id = v.department_id AND d.building = 'C') "
        "GROUP BY department LIMIT 10000",
        # a semi-join on the privacy unit
        "SELECT department, COUNT(*) FROM visits WHERE patient_id IN (SELECT patient_id FROM patients WHERE birth_year < 1960) "
        "GROUP BY department",
    ],
)
def test_subqueries_in_where_are_answered(client: Client, sql: str) -> None:
    rows = client.run(sql)
    assert rows and all(r[0] in DEPARTMENTS for r in rows)
    assert client.budget("session")[0] > 0


def test_scalar_subquery_of_two_rows_is_21000_and_free(client: Client) -> None:
    diag = client.error("SELECT COUNT(*) FROM visits WHERE department_id = (SELECT department_id FROM departments WHERE floor > 1)")
    assert diag.sqlstate == "21000"
    assert diag.message_primary == "more than one row returned by a subquery used as an expression"
    assert client.budget("session") == (0.0, 0.0)


def test_private_scalar_subquery_is_refused_naming_it(client: Client) -> None:
    diag = client.error("SELECT COUNT(*) FROM visits WHERE age > (SELECT AVG(age) FROM visits)")
    assert diag.sqlstate == "0A000" and "scalar subquery over the private table visits" in diag.message_primary
    assert client.budget("session") == (0.0, 0.0)


def test_exists_with_empty_select_list_over_a_public_table(client: Client) -> None:
    assert client.run("SELECT EXISTS (SELECT FROM public.departments WHERE floor > 2)") == [(True,)]
    assert client.run("SELECT EXISTS (SELECT FROM departments WHERE floor > 99)") == [(False,)]
