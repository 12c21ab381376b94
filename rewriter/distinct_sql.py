"""The bounded SQL of COUNT(DISTINCT x) and SUM(DISTINCT x) (part of pass 10, ``contribution``).

A distinct count is not a sum of per-(unit, group) partials, so each distinct input
(:class:`~dpsql.rewriter.aggregates.base.DistinctInput`) gets its own chain of CTEs next to
``__dp_per_unit``:

1. ``__dp_dvals{j}``: the distinct (unit, group, value) triples of the rows the other layers read
   (``__dp_rows``, or ``__dp_capped`` under ``max_contributions``), NULL values dropped;
2. ``__dp_dpick{j}``: each triple numbered within its (unit, group) by MD5 of (unit id, value text,
   salt) — a unit's order of its own values, independent of every other unit's rows;
3. ``__dp_dset{j}``: the distinct (group, value) pairs over the triples numbered ≤ k = ``per_unit``
   (the column's ``max_distinct``, else ``max_rows``) whose (unit, group) is one of the unit's
   ≤ ``max_groups`` kept groups (joined to ``__dp_ranked`` on the unit and the keys, NULL-safe,
   when groups are ranked);
4. ``__dp_dtot{j}``: per group, the number of those values (``__dp_dn``) and their sum
   (``__dp_ds``, for SUM(DISTINCT) over grid integers).

The per-group totals are merged with the ordinary statistics (``__dp_main``) by a UNION ALL (0 in
the other branches' columns) and one GROUP BY over the keys with a SUM per statistic (NULL keys
group together on every engine; no join on keys, and the sums stay exact integers).

**Sensitivity.** Removing a unit u changes no other unit's kept values or kept groups (both are
functions of that unit's own rows and the salt). In a group g u did not keep, nothing changes. In
a group it kept, the set of distinct kept values loses at most the ≤ k values u kept and no
other unit kept, and gains none: ``|Δ count| ≤ k`` and ``|Δ sum| ≤ k·max|v|`` (v clamped on the
grid). So L∞ = k (× the largest grid magnitude for the sum) and L0 =
``max_groups``; under ``max_contributions = m`` each kept value needs one of u's ≤ m kept rows, so
the change summed over groups is ≤ m values (L1).
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.rewriter.aggregates.base import Builder, DistinctInput, coalesce0

VALUE = "__dp_v"
SEP = "\x1f"


def distinct_ctes(
    b: Builder, key_names: list[str], source: str, ranked: bool, max_groups: int, salt: str
) -> list[tuple[str, exp.Select]]:
    """The CTEs of every distinct input, in dependency order (see the module docstring)."""
    out: list[tuple[str, exp.Select]] = []
    for j, d in enumerate(b.distinct_inputs):
        out += _chain(j, d, key_names, source, ranked, max_groups, salt)
    return out


def _chain(
    j: int, d: DistinctInput, key_names: list[str], source: str, ranked: bool, max_groups: int, salt: str
) -> list[tuple[str, exp.Select]]:
    uid_keys = [exp.column("__dp_uid"), *(exp.column(k) for k in key_names)]
    dvals = (
        exp.select(*uid_keys, exp.alias_(exp.column(d.column), VALUE, copy=False), copy=False)
        .distinct(copy=False)
        .from_(exp.to_table(source), copy=False)
        .where(exp.column(d.column).is_(exp.null()).not_(), copy=False)
    )
    parts: list[exp.Expression] = [
        exp.Cast(this=exp.column("__dp_uid"), to=exp.DataType.build("TEXT")),
        exp.Cast(this=exp.column(VALUE), to=exp.DataType.build("TEXT")),
        exp.Literal.string(salt),
    ]
    order = exp.Anonymous(
        this="MD5", expressions=[exp.Anonymous(this="CONCAT_WS", expressions=[exp.Literal.string(SEP), *parts])]
    )
    number = exp.Window(
        this=exp.RowNumber(),
        partition_by=[c.copy() for c in uid_keys],
        order=exp.Order(expressions=[exp.Ordered(this=order)]),
    )
    pick = exp.select(
        *(c.copy() for c in uid_keys), exp.column(VALUE), exp.alias_(number, "__dp_vr", copy=False), copy=False
    ).from_(exp.to_table(f"__dp_dvals{j}"), copy=False)
    kept = exp.LTE(this=exp.column("__dp_vr", table="__dp_d"), expression=exp.Literal.number(d.per_unit))
    dset = (
        exp.select(*(exp.column(k, table="__dp_d") for k in key_names), exp.column(VALUE, table="__dp_d"), copy=False)
        .distinct(copy=False)
        .from_(exp.to_table(f"__dp_dpick{j}", alias="__dp_d"), copy=False)
    )
    if ranked:
        on = [exp.EQ(this=exp.column("__dp_uid", table="__dp_r"), expression=exp.column("__dp_uid", table="__dp_d"))]
        on += [exp.NullSafeEQ(this=exp.column(k, table="__dp_r"), expression=exp.column(k, table="__dp_d")) for k in key_names]
        dset = dset.join(exp.to_table("__dp_ranked", alias="__dp_r"), on=exp.and_(*on), join_type="INNER", copy=False)
        kept = exp.and_(
            kept, exp.LTE(this=exp.column("__dp_rank", table="__dp_r"), expression=exp.Literal.number(max_groups))
        )
    dset = dset.where(kept, copy=False)
    measures: list[exp.Expression] = [exp.alias_(exp.Count(this=exp.Star()), "__dp_dn", copy=False)]
    if d.with_sum:
        measures.append(exp.alias_(coalesce0(exp.Sum(this=exp.column(VALUE))), "__dp_ds", copy=False))
    tot = exp.select(*(exp.column(k) for k in key_names), *measures, copy=False).from_(
        exp.to_table(f"__dp_dset{j}"), copy=False
    )
    if key_names:
        tot = tot.group_by(*(exp.column(k) for k in key_names), copy=False)
    return [(f"__dp_dvals{j}", dvals), (f"__dp_dpick{j}", pick), (f"__dp_dset{j}", dset), (f"__dp_dtot{j}", tot)]


def _zero() -> exp.Expression:
    """The placeholder of another branch's statistic: an integer 0, so that every engine unifies
    the UNION's column types (PostgreSQL cannot match an untyped NULL in the first branch with
    bigint) and the final SUM per group is the one branch's exact value."""
    return exp.Literal.number(0)


def merged(b: Builder, key_names: list[str], main: exp.Select | None) -> tuple[list[tuple[str, exp.Query]], exp.Select]:
    """``__dp_main`` (the ordinary statistics per group, when there are any) and each
    ``__dp_dtot{j}`` as one ``__dp_merge`` UNION ALL (each branch 0 in the others' columns),
    and the final SELECT: one row per group, each statistic in ``b.stats`` order summed over the
    branches (so a distinct statistic absent from a group is 0), then the distinct-unit count."""
    names = [s.column for s in b.stats] + ([b.units_column] if b.units_column else [])
    branches: list[exp.Select] = []
    if main is not None:
        branches.append(
            exp.select(
                *(exp.column(k) for k in key_names),
                *(exp.alias_(_zero(), n, copy=False) if i in b.distinct_of else exp.column(n) for i, n in enumerate(names)),
                copy=False,
            ).from_(exp.to_table("__dp_main"), copy=False)
        )
    for j, _ in enumerate(b.distinct_inputs):
        cols: list[exp.Expression] = []
        for i, n in enumerate(names):
            src = b.distinct_of.get(i)
            if src is not None and src[0] == j:
                cols.append(exp.alias_(exp.column("__dp_dn" if src[1] == "n" else "__dp_ds"), n, copy=False))
            else:
                cols.append(exp.alias_(_zero(), n, copy=False))
        branches.append(
            exp.select(*(exp.column(k) for k in key_names), *cols, copy=False).from_(exp.to_table(f"__dp_dtot{j}"), copy=False)
        )
    union: exp.Query = branches[0]
    for br in branches[1:]:
        union = exp.union(union, br, distinct=False, copy=False)
    finals: list[exp.Expression] = [exp.column(k) for k in key_names]
    for n in names:
        finals.append(exp.alias_(exp.Sum(this=exp.column(n)), n, copy=False))
    final = exp.select(*finals, copy=False).from_(exp.to_table("__dp_merge"), copy=False)
    if key_names:
        final = final.group_by(*(exp.column(k) for k in key_names), copy=False)
    ctes: list[tuple[str, exp.Query]] = [("__dp_main", main)] if main is not None else []
    ctes.append(("__dp_merge", union))
    return ctes, final
