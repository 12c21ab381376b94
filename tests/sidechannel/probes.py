"""The T6 probe corpus: queries whose work could depend on whether the target unit (alone in
Rareville, with three payments) is in the database.

Every probe puts the target's rows on a different path than everyone else's through
``CASE WHEN city = 'Rareville' …``: an operand that overflows, fails a cast, leaves a function's
domain, grows a string, or lands in a group of its own. ``FUNCTION_PROBES`` has one probe per
function of :data:`dpsql.rewriter.functions.SCALAR_FUNCTIONS` (a test checks the coverage, so a
function added to the allowlist needs a probe here).
"""

from __future__ import annotations

from dataclasses import dataclass

T = "city = 'Rareville'"
NUM = f"(CASE WHEN {T} THEN amount * 1e300 ELSE amount END)"
BIG = f"(CASE WHEN {T} THEN 9223372036854775807 ELSE qty END)"
TXT = f"(CASE WHEN {T} THEN note || note || note ELSE note END)"
DAY = f"(CASE WHEN {T} THEN 2000000000 ELSE 1 END)"


@dataclass(frozen=True)
class Probe:
    """One probe: a name and the SQL sent to both twins."""

    name: str
    sql: str


def _where(cond: str) -> str:
    return f"SELECT COUNT(*) FROM payments WHERE {cond}"


#: one probe per allowlisted scalar function (keyed by FunctionRule.name)
FUNCTION_PROBES: dict[str, str] = {
    "lower": _where(f"lower({TXT}) = 'x'"),
    "upper": _where(f"upper({TXT}) = 'X'"),
    "length": _where(f"length({TXT}) > 7"),
    "trim": _where(f"trim({TXT}, 'n') = '1'"),
    "concat": _where(f"length(concat({TXT}, {TXT}, {TXT})) > 9"),
    "||": _where(f"length({TXT} || {TXT} || {TXT}) > 9"),
    "replace": _where(f"length(replace(replace({TXT}, 'n', 'nnnnnnnnnnnnnnnn'), 'n', 'nnnnnnnnnnnnnnnn')) > 9"),
    "left": _where(f"left({TXT}, 3) = 'n1n'"),
    "right": _where(f"right({TXT}, 3) = 'n1n'"),
    "substring": _where(f"substring({TXT}, 2, 3) = '1n1'"),
    "strpos": _where(f"strpos({TXT}, 'tt') > 0"),
    "starts_with": _where(f"starts_with({TXT}, 'ta')"),
    "split_part": _where(f"split_part({TXT}, 't', 3) = 'a'"),
    "reverse": _where(f"reverse({TXT}) = 'x'"),
    "md5": _where(f"md5({TXT}) = 'x'"),
    "coalesce": _where(f"coalesce({NUM}, 0) > 1"),
    "nullif": _where(f"nullif({NUM}, 1e300) > 1"),
    "greatest": _where(f"greatest({NUM}, 5) > 6"),
    "least": _where(f"least({NUM}, 5) < 4"),
    "abs": _where(f"abs({BIG} - 9223372036854775807 - 10) > 1"),
    "round": _where(f"round({NUM}, 2) > 1"),
    "floor": _where(f"floor({NUM}) > 1"),
    "ceil": _where(f"ceil({NUM}) > 1"),
    "trunc": _where(f"trunc({NUM}) > 1"),
    "sign": _where(f"sign({NUM} - 500) > 0"),
    "pi": _where(f"{NUM} * pi() > 1e300"),
    "sqrt": _where(f"sqrt(CASE WHEN {T} THEN -1 ELSE amount END) > 1"),
    "ln": _where(f"ln(CASE WHEN {T} THEN 0 ELSE amount END) > 1"),
    "log": _where(f"log(CASE WHEN {T} THEN -5 ELSE amount END) > 1"),
    "exp": _where(f"exp(CASE WHEN {T} THEN 100000 ELSE 1 END) > 1"),
    "power": _where(f"power(CASE WHEN {T} THEN 1e300 ELSE 2 END, 2) > 1"),
    "extract": _where(f"extract(year FROM paid_on + {DAY}) > 2020"),
    "date_trunc": _where(f"date_trunc('month', paid_at + {DAY} * INTERVAL '1 second') > TIMESTAMP '2020-01-01'"),
    "current_date": _where(f"paid_on + {DAY} < current_date"),
    "current_timestamp": _where(f"paid_at + {DAY} * INTERVAL '1 second' < current_timestamp"),
    # BI tools' date functions: to_date/to_timestamp take literals only (constants, evaluated before
    # the charge); to_char and age see the target's date pushed out of range
    "to_date": _where(f"paid_on + {DAY} > to_date('2020-01-01', 'YYYY-MM-DD')"),
    "to_timestamp": _where(f"paid_at + {DAY} * INTERVAL '1 second' > to_timestamp('2020-01-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS')"),
    "to_char": _where(f"to_char(paid_on + {DAY}, 'YYYY-MM-DD HH24:MI:SS') > '2020'"),
    "age": _where(f"age(paid_at + {DAY} * INTERVAL '1 second', TIMESTAMP '2000-01-01') > INTERVAL '1 year'"),
}

_TERM = f"(CASE WHEN paid_on + (CASE WHEN {T} THEN 2000000000 + {{i}} ELSE 1 END) * INTERVAL '1 day' > DATE '2020-01-01' THEN 0 ELSE 1 END)"

#: the attack classes of issue 9 and the rest of the corpus
OTHER_PROBES: tuple[Probe, ...] = (
    Probe("membership count", _where(T)),
    Probe("FILTER", f"SELECT COUNT(*) FILTER (WHERE {T}) FROM payments"),
    Probe("CASE sum", f"SELECT SUM(CASE WHEN {T} THEN amount ELSE 0 END) FROM payments"),
    Probe("TRY amplifier: 40 date+interval overflow terms",
          "SELECT SUM(" + " + ".join(_TERM.format(i=i) for i in range(40)) + ") FROM payments"),
    Probe("date + integer overflow", _where(f"paid_on + {DAY} > DATE '2020-01-01'")),
    Probe("timestamp + interval overflow", _where(f"paid_at + {DAY} * INTERVAL '1 hour' > TIMESTAMP '2020-01-01'")),
    Probe("interval years overflow",
          _where(f"paid_at + (CASE WHEN {T} THEN 1000000 ELSE 1 END) * INTERVAL '1000 years' > TIMESTAMP '2020-01-01'")),
    Probe("date difference", _where(f"(CASE WHEN {T} THEN DATE '2024-01-01' ELSE paid_on END) - paid_on > 3")),
    Probe("cast text to int", _where(f"CAST(CASE WHEN {T} THEN 'abc' ELSE '1' END AS INTEGER) > 0")),
    Probe("cast huge float to int", _where(f"CAST({NUM} AS INTEGER) > 0")),
    Probe("cast text to date", _where(f"CAST(CASE WHEN {T} THEN '2024-02-30' ELSE '2024-02-01' END AS DATE) > DATE '2020-01-01'")),
    Probe("integer overflow", _where(f"{BIG} + {BIG} > 0")),
    Probe("division by zero", _where(f"amount / (CASE WHEN {T} THEN 0 ELSE 1 END) > 1")),
    Probe("modulo by zero", _where(f"qty % (CASE WHEN {T} THEN 0 ELSE 7 END) > 1")),
    Probe("string growth: 2 nested replace", _where(
        f"length(replace(replace(CASE WHEN {T} THEN 'V' ELSE '' END, 'V', '{'V' * 1500}'), 'V', '{'V' * 1500}')) > 5")),
    Probe("string growth: concat", _where(f"length(concat({TXT}, '{'W' * 4000}')) > 5")),
    Probe("partition selection: rare group", "SELECT city, COUNT(*) FROM payments GROUP BY city"),
    Probe("partition selection: SUM by group", "SELECT city, SUM(amount) FROM payments GROUP BY city"),
    Probe("declared keys", f"SELECT region, COUNT(*) FROM payments WHERE {T} GROUP BY region"),
    Probe("HAVING over noisy", "SELECT city, COUNT(*) FROM payments GROUP BY city HAVING COUNT(*) > 1"),
)


def corpus() -> list[Probe]:
    """Every probe of the corpus."""
    return [*(Probe(f"function {k}", v) for k, v in FUNCTION_PROBES.items()), *OTHER_PROBES]


def string_blowup(replacement: int = 3000, levels: int = 2) -> str:
    """A nested-replace probe that grows a string only on the target's rows (to
    ``replacement ** levels`` characters); the product refuses it once its growth bound holds."""
    e = f"CASE WHEN {T} THEN 'V' ELSE '' END"
    for _ in range(levels):
        e = f"replace({e}, 'V', '{'V' * replacement}')"
    return _where(f"length({e}) > 5")
