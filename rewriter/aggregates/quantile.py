"""Quantiles and MIN/MAX: a DP selection over a public candidate grid (no additive noise).

Spellings: ``PERCENTILE_CONT/PERCENTILE_DISC(q) WITHIN GROUP (ORDER BY x)``, ``MEDIAN(x)``,
``QUANTILE_CONT/QUANTILE_DISC/QUANTILE/APPROX_QUANTILE(x, q)``, ``MIN(x)``, ``MAX(x)``
(:mod:`dpsql.rewriter.quantile_sql`). Row-level input: the argument (under FILTER), mapped to its
candidate index on the grid of its declared bounds (numbers; dates and timestamps by their
``lower = 2020-01-01`` bounds). Bounding: a separate histogram query keeps ≤ ``max_rows`` values
per (unit, group) and ≤ ``max_groups`` groups per unit, and counts kept values per candidate.
Release: per group, OpenDP's quantile score and report-noisy-min (:mod:`dpsql.accountant.quantiles`)
pick a candidate; post-processing decodes it. MIN/MAX release *a DP estimate near the minimum
(maximum); it may lie inside the data*. MIN/MAX of the privacy unit stays refused (42501).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from dpsql.errors import PrivacyViolation, UnsupportedQuery
from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value, check_row_level, pretty
from dpsql.rewriter.families import type_family
from dpsql.rewriter.plan import AggregateRelease, QuantileStatistic, Statistic
from dpsql.rewriter.quantile_sql import (
    EXTREME_NOTE,
    ValueGrid,
    bin_expression,
    numeric_grid,
    quantile_call,
    time_grid,
)
from dpsql.rewriter.totalize import totalize

NODES: tuple[type[exp.Expression], ...] = (
    exp.WithinGroup,
    exp.PercentileCont,
    exp.PercentileDisc,
    exp.Median,
    exp.Quantile,
    exp.ApproxQuantile,
    exp.Min,
    exp.Max,
)
SPEC_KINDS = ("quantile",)
RELEASE_KINDS = ("quantile",)
ALIASES: dict[str, type[exp.Expression]] = {}
TWO_ARGUMENT_ALIASES: dict[str, type[exp.Expression]] = {"QUANTILE_CONT": exp.PercentileCont, "QUANTILE_DISC": exp.PercentileDisc}


def normalize(node: exp.Anonymous) -> exp.Expression | None:
    """DuckDB's ``QUANTILE_CONT(x, q)``/``QUANTILE_DISC(x, q)`` (parsed as anonymous functions in
    the PostgreSQL dialect) as sqlglot's PercentileCont/PercentileDisc(x, q)."""
    cls = TWO_ARGUMENT_ALIASES.get(str(node.name).upper())
    if cls is None:
        return None
    if len(node.expressions) != 2:
        raise UnsupportedQuery(f"{str(node.name).upper()} takes (expression, level)")
    return cls(this=node.expressions[0].copy(), expression=node.expressions[1].copy())


def approx_quantiles_offset(node: exp.ApproxQuantiles) -> exp.Expression:
    """GoogleSQL's ``APPROX_QUANTILES(x, n)[OFFSET(k)]`` (also ``SAFE_OFFSET(k)``, and ``ORDINAL(k)``,
    ``SAFE_ORDINAL(k)`` counting from 1) as ``PERCENTILE_DISC(k/n)`` of ``x``: the k-th of the n+1
    quantile boundaries (0 the minimum, n the maximum). Anything else is refused (0A000): the bare
    call returns an array of quantiles, which dpsql releases one element at a time."""
    hint = "index it with a literal: APPROX_QUANTILES(x, 4)[OFFSET(2)] is the median"
    n_node = node.args.get("expression")
    bracket = node.parent if isinstance(node.parent, exp.Bracket) and node.parent.this is node else None
    if not isinstance(n_node, exp.Literal) or n_node.is_string or not n_node.name.isdigit() or int(n_node.name) < 1:
        raise UnsupportedQuery("APPROX_QUANTILES needs a positive integer literal number of quantiles", hint=hint)
    if bracket is None or len(bracket.expressions) != 1:
        raise UnsupportedQuery("APPROX_QUANTILES(…) returns an array, which dpsql does not release whole", hint=hint)
    index = bracket.expressions[0]
    how = str(index.name).upper() if isinstance(index, exp.Anonymous) else ""
    arg = index.expressions[0] if isinstance(index, exp.Anonymous) and len(index.expressions) == 1 else None
    if how not in ("OFFSET", "SAFE_OFFSET", "ORDINAL", "SAFE_ORDINAL") or not isinstance(arg, exp.Literal) or not arg.name.isdigit():
        raise UnsupportedQuery("APPROX_QUANTILES(…)[…] needs OFFSET(k) or ORDINAL(k) with a literal k", hint=hint)
    n, k = int(n_node.name), int(arg.name) - (1 if how.endswith("ORDINAL") else 0)
    if not 0 <= k <= n:
        raise UnsupportedQuery(f"APPROX_QUANTILES(x, {n}) has boundaries 0 … {n}; {how}({arg.name}) is outside them", hint=hint)
    level = exp.Literal.number(f"{k / n:.17g}")
    return exp.PercentileDisc(this=node.this.copy(), expression=level)


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec | None:
    """The quantile or MIN/MAX call, its level in ``params``; refuses DISTINCT, nested aggregates and
    the privacy unit (42501)."""
    call = quantile_call(node)
    if call is None:
        return None
    name = node.this.sql_name() if isinstance(node, exp.WithinGroup) else node.sql_name()
    arg = call.input
    if isinstance(arg, exp.Distinct):
        raise UnsupportedQuery(
            f"{name}(DISTINCT …) is not supported: DISTINCT is supported only in COUNT(DISTINCT x) and SUM(DISTINCT x)",
            hint="remove DISTINCT",
        )
    if arg is None:
        raise UnsupportedQuery(f"{name} needs an argument")
    check_row_level(arg)
    if any(ctx.is_unit(c) for c in arg.find_all(exp.Column)):
        raise PrivacyViolation(
            f"{name} over the privacy unit column is not allowed",
            hint="the privacy unit identifies individuals; aggregate another column",
        )
    return AggregateSpec("quantile", ctx.filtered(arg), ctx.label, node, params=(call.kind, call.alpha))


def _time_column(spec: AggregateSpec, b: Builder) -> tuple[object, object]:
    """The declared date/timestamp bounds of the one column ``spec.input`` reads."""
    assert spec.input is not None
    cols = {(c.table, c.name) for c in spec.input.find_all(exp.Column)}
    found = [b.time_bounds[c] for c in cols if c in b.time_bounds]
    if len(cols) != 1 or len(found) != 1:
        names = ", ".join(sorted(n for _, n in cols)) or pretty(spec.input)
        raise PrivacyViolation(
            f"{spec.label} needs date bounds: declare lower and upper for {names} in the policy "
            "(e.g. lower = 2020-01-01, upper = 2025-12-31)",
            hint="quantiles and MIN/MAX of dates and timestamps need declared bounds on a column",
        )
    return found[0]


def value_grid(spec: AggregateSpec, b: Builder) -> ValueGrid:
    """The public grid of ``spec.input``: declared bounds (numbers by interval arithmetic, dates and
    timestamps of a bare column); refuses an unbounded input (42501)."""
    assert spec.input is not None
    fam = type_family(spec.input, b.families)
    if fam in ("date", "timestamp"):
        lo, hi = _time_column(spec, b)
        if (fam == "timestamp") != hasattr(lo, "hour"):
            raise PrivacyViolation(
                f"{spec.label}: the column's bounds are {'dates' if fam == 'timestamp' else 'date-times'}, "
                f"but the expression is a {fam}",
                hint="declare bounds of the column's own type (a date, or a date-time like 2020-01-01T00:00:00)",
            )
        return time_grid(lo, hi)  # type: ignore[arg-type]
    if fam not in ("int", "float", "numeric"):
        raise UnsupportedQuery(f"{spec.label}: quantiles and MIN/MAX need a number, a date or a timestamp")
    g = b.grid_for(spec)
    return numeric_grid(g.lower, g.upper, integral=g.integer_input)


def bound(spec: AggregateSpec, b: Builder) -> AggregateRelease:
    """A histogram of the input on its grid (shared by every level of the same input) and one DP
    selection over it."""
    assert spec.input is not None
    kind, alpha = spec.params
    vg = value_grid(spec, b)
    key = f"{spec.input.sql()}|{vg!r}"
    total = totalize(spec.input, b.dialect, b.families)
    h = b.histogram(key, bin_expression(total, vg, b.dialect, type_family(spec.input, b.families)), vg.grid.size)
    target = "quantile" if kind in ("cont", "disc") else kind
    label = pretty(spec.input)
    r = b.max_rows
    if target == "quantile":
        desc = f"quantile {float(alpha):g} of {label}: DP selection over {vg.describe()}; ≤ {r} value(s) per unit and group"  # type: ignore[arg-type]
    else:
        which = "minimum" if target == "min" else "maximum"
        desc = f"{target.upper()}({label}): {EXTREME_NOTE.format(which=which)}; {vg.describe()}; ≤ {r} value(s) per unit and group"
    q = QuantileStatistic(f"__dp_q{len(b.quantiles)}", h, target, alpha, vg.grid.size, r, desc, vg)  # type: ignore[arg-type]
    col = b.quantile(q)
    pg = "float8" if kind == "cont" and vg.value_kind in ("int", "float") else vg.pg_type
    return AggregateRelease("quantile", spec.label, (col,), vg.grid.lower, vg.grid.upper, integer=pg == "int8", pg_type=pg)


def finalize(r: AggregateRelease, stats: Mapping[str, Statistic], cols: Sequence[Sequence[int]], n: int) -> list[Value]:
    """The released candidate of each group, decoded to a value (post-processing of public indices)."""
    q = stats[r.stats[0]]
    vg = q.grid  # type: ignore[attr-defined]
    assert isinstance(vg, ValueGrid)
    out: list[Value] = []
    for g in range(n):
        v = vg.decode(int(cols[0][g]))
        out.append(float(v) if r.pg_type == "float8" else v)  # type: ignore[arg-type]
    return out


def pg_type(r: AggregateRelease) -> str:
    """float8 for PERCENTILE_CONT of numbers, the input's type otherwise."""
    return r.pg_type or "float8"
