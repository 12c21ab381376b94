"""The aggregate registry: one module per aggregate kind (OpenDP's one-module-per-expression layout).

Used by pass 3 (``aliases``: :func:`normalize_aliases`), pass 4 (the allowlist admits
:data:`SUPPORTED_AGGREGATES`), pass 9 (``analyze``: :func:`classify`), pass 10 (``contribution``:
each module's ``bound``) and post-processing (``finalize``).

Every module in :data:`MODULES` has the same shape:

``NODES``
    the sqlglot aggregate node types it may accept (the allowlist admits exactly these);
``ALIASES``
    other dialects' function names (parsed as ``exp.Anonymous``) mapped to (one of its node types,
    a note for EXPLAIN saying whose meaning was taken), rewritten before the allowlist
    (``VAR(x)`` → ``VAR_SAMP(x)``);
``SPEC_KINDS`` / ``RELEASE_KINDS``
    the :class:`~dpsql.rewriter.aggregates.base.AggregateSpec` kinds it classifies and bounds, and
    the :class:`~dpsql.rewriter.plan.AggregateRelease` kinds it post-processes;
``classify(node, ctx) -> AggregateSpec | None``
    its row-level input, or None to let the next module with the same node type try (modules are
    tried in :data:`MODULES` order); it may raise a refusal;
``bound(spec, builder) -> AggregateRelease``
    its per-(unit, group) partials with their clamps, the statistics it needs and their
    sensitivities, requested from the :class:`~dpsql.rewriter.aggregates.base.Builder`;
``finalize(release, stats, noisy_columns, groups) -> list[value]``
    its post-processing of noisy integers (pure, no exact value ever);
``pg_type(release) -> str``
    the PostgreSQL type of the released value.

Adding an aggregate is one new module plus one entry in :data:`MODULES` (see DEVELOPERS.md).

>>> from sqlglot import exp
>>> module_for_release("avg").__name__, module_for_spec("count_star").__name__
('dpsql.rewriter.aggregates.avg', 'dpsql.rewriter.aggregates.count')
>>> exp.Variance in SUPPORTED_AGGREGATES
True
"""

from __future__ import annotations

from types import ModuleType

from sqlglot import exp

from dpsql.errors import UnsupportedQuery
from dpsql.rewriter.aggregates import avg, count, count_distinct, count_distinct_unit, quantile, sum_distinct, variance
from dpsql.rewriter.aggregates import sum as sum_
from dpsql.rewriter.aggregates.base import AggregateSpec, Builder, ClassifyContext, Value

__all__ = [
    "MODULES",
    "SUPPORTED_AGGREGATES",
    "AggregateSpec",
    "Builder",
    "ClassifyContext",
    "Value",
    "classify",
    "module_for_release",
    "module_for_spec",
    "normalize_aliases",
]

# Order matters only among modules sharing a node type: the first whose classify answers wins.
MODULES: tuple[ModuleType, ...] = (
    count_distinct_unit,
    count_distinct,
    count,
    sum_distinct,
    sum_,
    avg,
    variance,
    quantile,
)

SUPPORTED_AGGREGATES: tuple[type[exp.Expression], ...] = tuple(dict.fromkeys(n for m in MODULES for n in m.NODES))
ALIASES: dict[str, tuple[type[exp.Expression], str]] = {name.upper(): a for m in MODULES for name, a in m.ALIASES.items()}

_BY_SPEC: dict[str, ModuleType] = {k: m for m in MODULES for k in m.SPEC_KINDS}
_BY_RELEASE: dict[str, ModuleType] = {k: m for m in MODULES for k in m.RELEASE_KINDS}


def module_for_spec(kind: str) -> ModuleType:
    """The module that bounds aggregates classified as ``kind`` (KeyError if none)."""
    return _BY_SPEC[kind]


def module_for_release(kind: str) -> ModuleType:
    """The module that post-processes releases of ``kind`` (KeyError if none)."""
    return _BY_RELEASE[kind]


def classify(node: exp.Expression, ctx: ClassifyContext) -> AggregateSpec:
    """The spec of one aggregate node (FILTER already unwrapped into ``ctx.condition``).

    Raises UnsupportedQuery for an aggregate no module accepts, and whatever refusal the
    accepting module raises.
    """
    for m in MODULES:
        if isinstance(node, m.NODES):
            spec = m.classify(node, ctx)
            if spec is not None:
                return spec
    raise UnsupportedQuery(f"aggregate {node.sql_name()} is not supported")


def normalize_aliases(tree: exp.Expression) -> list[str]:
    """Rewrite other dialects' aggregate names (``ALIASES``, and a module's own ``normalize`` hook
    for other shapes, e.g. DuckDB's two-argument QUANTILE_CONT) to the registry's nodes, in place;
    returns a note per alias used (for EXPLAIN), saying what it was read as.

    >>> from sqlglot import parse_one
    >>> t = parse_one("SELECT VAR(x), STD(y), STDEV(z) FROM t")
    >>> normalize_aliases(t)
    ['VAR(…) is read as VAR_SAMP (SQL Server)', 'STD(…) is read as STDDEV_POP (MySQL; Spark reads it as STDDEV_SAMP)']
    >>> t.sql("postgres")
    'SELECT VAR_SAMP(x), STDDEV_POP(y), STDDEV(z) FROM t'
    """
    notes: list[str] = []
    for node in list(tree.find_all(exp.ApproxDistinct)):
        node.replace(count_distinct.approx_distinct(node))
        if count_distinct.APPROX_NOTE not in notes:
            notes.append(count_distinct.APPROX_NOTE)
    for node in list(tree.find_all(exp.ApproxQuantiles)):
        new_node = quantile.approx_quantiles_offset(node)
        target = node.parent if isinstance(node.parent, exp.Bracket) else node
        target.replace(new_node)
        note = "APPROX_QUANTILES(x, n)[OFFSET(k)] is read as PERCENTILE_DISC(k/n) (GoogleSQL)"
        if note not in notes:
            notes.append(note)
    hooks = [m.normalize for m in MODULES if hasattr(m, "normalize")]
    for node in list(tree.find_all(exp.Anonymous)):
        new = next((n for n in (h(node) for h in hooks) if n is not None), None)
        if new is not None:
            node.replace(new)
            continue
        name = str(node.name).upper()
        alias = ALIASES.get(name)
        if alias is None:
            continue
        cls, note = alias
        args = node.expressions
        if len(args) != 1 or isinstance(args[0], exp.Star):
            raise UnsupportedQuery(f"{name} takes exactly one argument", hint=f"write {name}(column)")
        node.replace(cls(this=args[0].copy()))
        if note not in notes:
            notes.append(note)
    return notes
