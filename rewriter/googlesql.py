"""Pass 0 (``googlesql``): GoogleSQL's differential-privacy syntax, read as dpsql's own query.

BigQuery users write ::

    SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon = 1, delta = 1e-7, max_groups_contributed = 2,
                                              privacy_unit_column = patient_id)
      department, AVG(cost, contribution_bounds_per_row => (0, 5000)) FROM visits GROUP BY department

This pass turns such a statement into plain SQL plus :class:`GoogleDP` (the options), which the
proxy applies **within what the policy allows** — never more than the policy's per-query ε and δ,
never looser contribution bounds than declared:

- ``epsilon`` / ``delta`` are this statement's ε and δ, checked exactly as ``SET dp.epsilon`` /
  ``SET dp.delta`` are (22023 outside the policy's per-query range);
- ``max_groups_contributed`` (``kappa``) tightens every private table's ``max_groups`` for this
  statement (a value above the policy's is refused, 22023: the policy's bounds are what the privacy
  engineer signed off); ``max_rows_contributed`` is the statement's ``max_contributions`` (an L1
  row cap across all groups; the lower of it and the policy's applies, beside the policy's
  ``max_groups`` and ``max_rows``);
- ``privacy_unit_column`` must name the policy's privacy unit of the query's private tables (42501);
  on a table whose rows belong to a unit through a key path (``privacy_unit = { via = …,
  references = … }``) any ``privacy_unit_column`` is refused (42501): the unit is the policy's;
- ``group_selection_strategy = PUBLIC_GROUPS`` refuses the query unless every group key is public
  (declared values or a public table), so no partition selection runs;
- ``min_privacy_units_per_group = m`` keeps a group only when its *noisy* distinct-unit count is
  ≥ max(τ, m), τ being the threshold dpsql derives from ε and δ (GoogleSQL also filters on the
  exact count; dpsql never reads an exact count into a release decision). Raising a threshold
  only drops groups, so the map's δ can only fall. It needs partition selection: with public group
  keys or without GROUP BY it is refused (0A000);
- per aggregate, ``contribution_bounds_per_row => (lo, hi)`` clamps the aggregate's input to
  ``[lo, hi]`` (the analyst's clamp ``LEAST(GREATEST(x, lo), hi)``, whose interval the rewriter
  intersects with the declared bounds, so it can only tighten them);
  ``contribution_bounds_per_group => (0, k)`` on COUNT bounds one unit's rows in a group to k (a
  per-statement ``max_rows``); on ``SUM``/``AVG`` of a bare column it is the column's per-unit bounds
  for this statement (``unit_lower``/``unit_upper``: each unit's total in a group clamped to them),
  never looser than the policy's unit bounds or, without them, ``max_rows`` rows at its row bounds
  (22023); on other aggregates it is refused (0A000); ``report_format => 'JSON'`` returns the
  value with its noise confidence interval as JSON text (``{"result": {"value": …,
  "noise_confidence_interval": {"lower_bound": …, "upper_bound": …, "confidence_level": 0.95}}}``),
  computed from the released value and the public noise scale only (post-processing; at ``dp.confidence`` 0.95 for that statement).

Pure text-to-text: the statement is tokenized with sqlglot's PostgreSQL tokenizer, so string
literals, comments and quoted names are never mistaken for the syntax above. A statement without
``WITH DIFFERENTIAL_PRIVACY`` / ``WITH ANONYMIZATION`` and without ``=>`` arguments is returned
unchanged (:func:`translate` gives None).

>>> g = translate("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS(epsilon=0.5, delta=1e-7) COUNT(*) FROM t")
>>> g.sql, g.epsilon, g.delta
('SELECT COUNT(*) FROM t', Fraction(1, 2), Fraction(1, 10000000))
>>> translate("SELECT SUM(x, contribution_bounds_per_row => (0, 10)) FROM t").sql
'SELECT SUM(LEAST(GREATEST((x), 0), 10)) FROM t'
>>> translate("SELECT COUNT(*) FROM t") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from dpsql.errors import InvalidParameterValue, PrivacyViolation, QuerySyntaxError, UnsupportedQuery
from dpsql.policy import ColumnPolicy
from dpsql.schema import Catalog

__all__ = ["GoogleDP", "check", "tightened", "translate"]

_CLAUSE_NAMES = ("DIFFERENTIAL_PRIVACY", "ANONYMIZATION")
_OPTIONS = {
    "epsilon", "delta", "max_groups_contributed", "kappa", "max_rows_contributed",
    "privacy_unit_column", "group_selection_strategy", "min_privacy_units_per_group",
}
_GROUP_STRATEGIES = ("LAPLACE_THRESHOLD", "PUBLIC_GROUPS")
_REPORT_CONFIDENCE = Fraction(95, 100)


@dataclass(frozen=True)
class GoogleDP:
    """A GoogleSQL DP statement read as plain SQL (``sql``) and the options it carried."""

    sql: str
    epsilon: Fraction | None = None
    delta: Fraction | None = None
    max_groups: int | None = None
    max_rows: int | None = None  # the tightest COUNT contribution_bounds_per_group
    max_contributions: int | None = None  # max_rows_contributed: the L1 row cap for this statement
    privacy_unit_column: str | None = None
    public_groups: bool = False
    min_units: int | None = None  # min_privacy_units_per_group: the selection threshold is at least this
    report: bool = False  # some aggregate asked report_format => 'JSON'
    unit_bounds: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)  # SUM/AVG per-group bounds by column
    notes: tuple[str, ...] = field(default=())

    @property
    def confidence(self) -> Fraction | None:
        """The confidence the JSON reports state (None when no aggregate asked for a report)."""
        return _REPORT_CONFIDENCE if self.report else None


def translate(sql: str) -> GoogleDP | None:
    """``sql`` with GoogleSQL's DP clause and named aggregate arguments turned into plain SQL and
    options, or None when it has neither. Raises a DPSQLError (42601, 22023, 0A000) for malformed
    or unsupported options — before anything is charged."""
    try:
        tokens = Postgres().tokenize(sql)
    except TokenError:
        return None  # the parser reports the syntax error with its own message
    has_clause = any(
        t.token_type == TokenType.WITH and i + 1 < len(tokens) and tokens[i + 1].text.upper() in _CLAUSE_NAMES
        and i > 0 and tokens[i - 1].token_type == TokenType.SELECT
        for i, t in enumerate(tokens)
    )
    has_named = any(t.token_type == TokenType.FARROW for t in tokens)
    if not has_clause and not has_named:
        return None
    edits: list[tuple[int, int, str]] = []  # (start, end inclusive, replacement) on the original text
    options: dict[str, str] = {}
    out = GoogleDP(sql="")
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if (t.token_type == TokenType.WITH and i > 0 and tokens[i - 1].token_type == TokenType.SELECT
                and i + 1 < len(tokens) and tokens[i + 1].text.upper() in _CLAUSE_NAMES):
            if options or out.notes:
                raise UnsupportedQuery("only one WITH DIFFERENTIAL_PRIVACY clause per statement is supported")
            end, options = _options(tokens, i)
            edits.append((t.start, tokens[end + 1].start - 1 if end + 1 < len(tokens) else tokens[end].end, ""))
            out = replace(out, notes=(*out.notes, f"GoogleSQL WITH {tokens[i + 1].text.upper()} OPTIONS read as dpsql settings"))
            i = end + 1
            continue
        i += 1
    out = _apply_options(out, options)
    calls, out = _named_calls(sql, tokens, out)
    edits.extend(calls)
    text = sql
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end + 1:]
    return replace(out, sql=text.strip())


def tightened(catalog: Catalog, g: GoogleDP) -> Catalog:
    """``catalog`` with every private table's ``max_groups``/``max_rows`` lowered to ``g``'s where
    ``g``'s are tighter (never raised: :func:`check` refuses a looser bound on the tables queried)."""
    if g.max_groups is None and g.max_rows is None and g.max_contributions is None and not g.unit_bounds:
        return catalog
    tables = dict(catalog.tables)
    for key, info in catalog.tables.items():
        tp = info.policy
        if tp.public or tp.privacy_unit is None:
            continue
        caps = [c for c in (g.max_contributions, tp.max_contributions) if c is not None]
        new = replace(tp, max_groups=min(g.max_groups or tp.max_groups, tp.max_groups),
                      max_rows=min(g.max_rows or tp.max_rows, tp.max_rows),
                      max_contributions=min(caps) if caps else None)
        if g.unit_bounds:
            columns = dict(new.columns)
            for name, (lo, hi) in g.unit_bounds.items():
                if name in columns:
                    columns[name] = replace(columns[name], unit_lower=lo, unit_upper=hi)
            new = replace(new, columns=columns)
        tables[key] = replace(info, policy=new)
    return Catalog(catalog.policy, tables)


def check(catalog: Catalog, g: GoogleDP, private_tables: tuple[str, ...]) -> None:
    """Refuse what ``g`` asks beyond the policy for the query's ``private_tables``: a bound above the
    declared one (22023) or a ``privacy_unit_column`` other than the table's privacy unit (42501)."""
    for name in private_tables:
        info = catalog.table(name)
        if info is None or info.policy.privacy_unit is None:
            continue
        tp = info.policy
        if g.max_groups is not None and g.max_groups > tp.max_groups:
            raise InvalidParameterValue(
                f"max_groups_contributed = {g.max_groups} is above the policy's max_groups ({tp.max_groups}) for {tp.name}",
                hint=f"use max_groups_contributed <= {tp.max_groups}, or ask the privacy engineer to raise max_groups",
            )
        if g.max_rows is not None and g.max_rows > tp.max_rows:
            raise InvalidParameterValue(
                f"the statement's per-group row bound ({g.max_rows}) is above the policy's max_rows ({tp.max_rows}) for {tp.name}",
                hint=f"use a bound <= {tp.max_rows}",
            )
        for name, (lo, hi) in g.unit_bounds.items():
            declared = tp.columns.get(name)
            if declared is None:
                continue
            allowed = _unit_range(declared, tp.max_rows)
            if allowed is None or lo < allowed[0] or hi > allowed[1]:
                what = ("declares no bounds" if allowed is None else
                        f"allows a unit's total in a group in [{_fmt(allowed[0])}, {_fmt(allowed[1])}]")
                raise InvalidParameterValue(
                    f"contribution_bounds_per_group => ({_fmt(lo)}, {_fmt(hi)}) for {tp.name}.{name} is looser than the policy, "
                    f"which {what}",
                    hint="use bounds inside the policy's, or ask the privacy engineer to declare unit_lower/unit_upper",
                )
        unit = tp.privacy_unit
        if g.privacy_unit_column is not None and tp.keyed:
            raise PrivacyViolation(
                f"privacy_unit_column = {g.privacy_unit_column} names a column of {tp.name}, whose rows belong to a unit "
                f"through a key path: its privacy unit is {tp.unit_label}, fixed by the policy",
                hint="leave privacy_unit_column out: the policy's unit applies to every query over this table",
            )
        if g.privacy_unit_column is not None and unit.lower() != g.privacy_unit_column.lower():
            raise PrivacyViolation(
                f"privacy_unit_column = {g.privacy_unit_column}, but the privacy unit of {tp.name} is {unit}",
                hint=f"the policy protects each {unit}; write privacy_unit_column = {unit} or leave it out",
            )


# ------------------------------------------------------------------------------------------ internals


def _fmt(v: Fraction) -> str:
    return f"{float(v):g}"


def _unit_range(c: ColumnPolicy, max_rows: int) -> tuple[Fraction, Fraction] | None:
    """What the policy lets one unit add to one group of ``SUM(c)``: its declared unit bounds, else
    ``max_rows`` rows at its row bounds; None when it declares neither."""
    if c.unit_bounded:
        return c.unit_lower, c.unit_upper  # type: ignore[return-value]
    if c.bounded:
        assert c.lower is not None and c.upper is not None
        return max_rows * min(c.lower, Fraction(0)), max_rows * max(c.upper, Fraction(0))
    return None


def _options(tokens: list[Token], i: int) -> tuple[int, dict[str, str]]:
    """Parse ``WITH <name> OPTIONS ( k = v, … )`` starting at token ``i`` (WITH); the index of the
    closing parenthesis and the options (lower-case names, values as written)."""
    j = i + 2
    if j >= len(tokens) or tokens[j].text.upper() != "OPTIONS":
        if j < len(tokens) and tokens[j].token_type != TokenType.L_PAREN:
            return i + 1, {}  # WITH DIFFERENTIAL_PRIVACY without options: defaults
        raise QuerySyntaxError(f"syntax error: expected OPTIONS (…) after WITH {tokens[i + 1].text.upper()}")
    j += 1
    if j >= len(tokens) or tokens[j].token_type != TokenType.L_PAREN:
        raise QuerySyntaxError("syntax error: expected ( after OPTIONS")
    j += 1
    options: dict[str, str] = {}
    while j < len(tokens) and tokens[j].token_type != TokenType.R_PAREN:
        name = tokens[j].text.lower()
        if j + 2 >= len(tokens) or tokens[j + 1].token_type != TokenType.EQ:
            raise QuerySyntaxError(f"syntax error in OPTIONS: expected {name} = value")
        value, j = _value(tokens, j + 2)
        if name not in _OPTIONS:
            raise InvalidParameterValue(
                f"unknown differential privacy option {name}", hint="options: " + ", ".join(sorted(_OPTIONS))
            )
        if name in options:
            raise InvalidParameterValue(f"differential privacy option {name} is given twice")
        options[name] = value
        if j < len(tokens) and tokens[j].token_type == TokenType.COMMA:
            j += 1
    if j >= len(tokens):
        raise QuerySyntaxError("syntax error: OPTIONS (… is not closed")
    return j, options


def _value(tokens: list[Token], j: int) -> tuple[str, int]:
    """One option value (a signed number, string, identifier or NULL) at ``j``; (text, next index)."""
    sign = ""
    if tokens[j].token_type in (TokenType.DASH, TokenType.PLUS):
        sign = "-" if tokens[j].token_type == TokenType.DASH else ""
        j += 1
    if j >= len(tokens) or tokens[j].token_type in (TokenType.COMMA, TokenType.R_PAREN, TokenType.L_PAREN):
        raise QuerySyntaxError("syntax error in OPTIONS: a value is missing")
    return sign + tokens[j].text, j + 1


def _number(name: str, text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise InvalidParameterValue(f"differential privacy option {name} must be a number, not {text!r}") from None
    return value


def _count(name: str, text: str) -> int | None:
    if text.upper() == "NULL":
        return None
    value = _number(name, text)
    if value.denominator != 1 or value < 1:
        raise InvalidParameterValue(f"differential privacy option {name} must be a positive integer, not {text}")
    return int(value)


def _apply_options(g: GoogleDP, options: dict[str, str]) -> GoogleDP:
    if "epsilon" in options:
        g = replace(g, epsilon=_number("epsilon", options["epsilon"]))
    if "delta" in options:
        g = replace(g, delta=_number("delta", options["delta"]))
    groups = options.get("max_groups_contributed", options.get("kappa"))
    if "max_groups_contributed" in options and "kappa" in options:
        raise InvalidParameterValue("give max_groups_contributed or kappa, not both")
    if groups is not None:
        g = replace(g, max_groups=_count("max_groups_contributed", groups))
    if "max_rows_contributed" in options:
        # GoogleSQL's max_rows_contributed is an L1 bound over all groups: the statement's
        # max_contributions (never above the policy's; the policy's max_groups/max_rows still bind)
        g = replace(g, max_contributions=_count("max_rows_contributed", options["max_rows_contributed"]))
    if "privacy_unit_column" in options:
        g = replace(g, privacy_unit_column=options["privacy_unit_column"].strip('"'))
    if "group_selection_strategy" in options:
        strategy = options["group_selection_strategy"].strip("'\"").upper()
        if strategy not in _GROUP_STRATEGIES:
            raise InvalidParameterValue(
                f"group_selection_strategy {strategy} is not known", hint="LAPLACE_THRESHOLD (the default) or PUBLIC_GROUPS"
            )
        g = replace(g, public_groups=strategy == "PUBLIC_GROUPS")
    if "min_privacy_units_per_group" in options:
        g = replace(g, min_units=_count("min_privacy_units_per_group", options["min_privacy_units_per_group"]))
        if g.min_units is not None and g.public_groups:
            raise InvalidParameterValue(
                "min_privacy_units_per_group must not be given with group_selection_strategy = PUBLIC_GROUPS",
                hint="public groups are all released; a unit threshold applies only to groups found by partition selection",
            )
    return g


def _named_calls(sql: str, tokens: list[Token], g: GoogleDP) -> tuple[list[tuple[int, int, str]], GoogleDP]:
    """Edits for every function call carrying ``name => value`` arguments, and the options they set."""
    edits: list[tuple[int, int, str]] = []
    stack: list[int] = []  # indexes of open parentheses
    calls: dict[int, int] = {}  # open paren index → close paren index
    for k, t in enumerate(tokens):
        if t.token_type == TokenType.L_PAREN:
            stack.append(k)
        elif t.token_type == TokenType.R_PAREN and stack:
            calls[stack.pop()] = k
    done: set[int] = set()
    for k, t in enumerate(tokens):
        if t.token_type != TokenType.FARROW:
            continue
        opener = max((o for o, c in calls.items() if o < k < c), default=None)
        if opener is None or opener == 0 or opener in done:
            continue
        done.add(opener)
        edit, g = _rewrite_call(sql, tokens, opener - 1, opener, calls[opener], calls, g)
        edits.append(edit)
    return edits, g


def _split_args(tokens: list[Token], opener: int, closer: int, calls: dict[int, int]) -> list[tuple[int, int]]:
    """Top-level argument token ranges (inclusive) of the call whose parentheses are at ``opener``/``closer``."""
    args: list[tuple[int, int]] = []
    start = opener + 1
    k = start
    while k < closer:
        if tokens[k].token_type == TokenType.L_PAREN:
            k = calls[k] + 1
            continue
        if tokens[k].token_type == TokenType.COMMA:
            args.append((start, k - 1))
            start = k + 1
        k += 1
    if start <= closer - 1:
        args.append((start, closer - 1))
    return args


def _rewrite_call(sql: str, tokens: list[Token], name_at: int, opener: int, closer: int, calls: dict[int, int],
                  g: GoogleDP) -> tuple[tuple[int, int, str], GoogleDP]:
    name = tokens[name_at].text.upper()
    positional: list[str] = []
    per_row: tuple[str, str] | None = None
    per_group: tuple[str, str] | None = None
    report = False
    for a, b in _split_args(tokens, opener, closer, calls):
        if b >= a + 1 and tokens[a + 1].token_type == TokenType.FARROW:
            arg = tokens[a].text.lower()
            value = sql[tokens[a + 2].start: tokens[b].end + 1] if b >= a + 2 else ""
            if arg in ("contribution_bounds_per_row", "contribution_bounds_per_group"):
                lo, hi = _bounds(arg, value)
                if arg == "contribution_bounds_per_row":
                    per_row = (lo, hi)
                elif name == "COUNT":
                    rows = _count(arg, hi)
                    if Fraction(lo) != 0 or rows is None:
                        raise InvalidParameterValue(f"{arg} of COUNT must be (0, k) with k ≥ 1, not {value}")
                    g = replace(g, max_rows=rows if g.max_rows is None else min(g.max_rows, rows))
                elif name in ("SUM", "AVG"):
                    per_group = (lo, hi)
                else:
                    raise UnsupportedQuery(
                        f"contribution_bounds_per_group on {name} is not supported",
                        hint="use contribution_bounds_per_row => (lo, hi), or the column's bounds in the policy",
                    )
            elif arg == "report_format":
                fmt = value.strip("'\"").upper()
                if fmt != "JSON":
                    raise UnsupportedQuery(
                        f"report_format {fmt} is not supported", hint="report_format => 'JSON' returns the value and its interval"
                    )
                report = True
            else:
                raise InvalidParameterValue(f"unknown argument {arg} => … of {name}",
                                            hint="contribution_bounds_per_row, contribution_bounds_per_group, report_format")
        else:
            positional.append(sql[tokens[a].start: tokens[b].end + 1])
    if per_group is not None:
        column = positional[0].strip().split(".")[-1].strip('"').lower() if positional else ""
        if not column.isidentifier() or len(positional) != 1:
            raise UnsupportedQuery(f"contribution_bounds_per_group on {name} needs a bare column: {name}(column, …)",
                                   hint="bound an expression with contribution_bounds_per_row instead")
        bounds = (Fraction(per_group[0]), Fraction(per_group[1]))
        if g.unit_bounds.get(column, bounds) != bounds:
            raise UnsupportedQuery(f"two different contribution_bounds_per_group for {column} in one statement",
                                   hint="give every aggregate of the column the same per-group bounds")
        g = replace(g, unit_bounds={**g.unit_bounds, column: bounds})
    if per_row is not None:
        if not positional or positional[0].strip() == "*":
            raise InvalidParameterValue(f"contribution_bounds_per_row needs an argument to clamp: {name}(*) has none")
        positional[0] = f"LEAST(GREATEST(({positional[0]}), {per_row[0]}), {per_row[1]})"
    call = f"{sql[tokens[name_at].start: tokens[name_at].end + 1]}({', '.join(positional)})"
    if report:
        call = _json_report(call)
        g = replace(g, report=True)
    return (tokens[name_at].start, tokens[closer].end, call), g


def _bounds(arg: str, value: str) -> tuple[str, str]:
    inner = value.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        raise InvalidParameterValue(f"{arg} must be (lower, upper), not {value}")
    parts = [p.strip() for p in inner[1:-1].split(",")]
    if len(parts) != 2:
        raise InvalidParameterValue(f"{arg} must be (lower, upper), not {value}")
    try:
        lo, hi = Fraction(parts[0]), Fraction(parts[1])
    except (ValueError, ZeroDivisionError):
        raise InvalidParameterValue(f"{arg} must hold two number literals, not {value}") from None
    if lo > hi:
        raise InvalidParameterValue(f"{arg}: the lower bound {parts[0]} is above the upper bound {parts[1]}")
    return parts[0], parts[1]


def _json_report(call: str) -> str:
    """GoogleSQL's JSON report of one aggregate, built by post-processing from the released value
    and its noise-only interval (DP_INTERVAL_LOW/HIGH at the statement's confidence, 0.95)."""
    def text(expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    return (
        "('{\"result\":{\"value\":' || " + text(call)
        + " || ',\"noise_confidence_interval\":{\"lower_bound\":' || " + text(f"DP_INTERVAL_LOW({call})")
        + " || ',\"upper_bound\":' || " + text(f"DP_INTERVAL_HIGH({call})")
        + " || ',\"confidence_level\":0.95}}}')"
    )
