"""docs/sql.md names everything the code accepts: aggregates, their aliases, scalar functions, settings.

The SQL reference is what error hints point analysts to ("see docs/sql.md"); a function the
allowlist admits but the reference omits is a function nobody can discover, and one the reference
lists but the code refuses is a promise the product breaks. This test ties the two together.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlglot import exp

from dpsql.proxy.settings import NAMES
from dpsql.rewriter import aggregates
from dpsql.rewriter.aggregates import quantile
from dpsql.rewriter.functions import NAMED_FUNCTIONS, RAW_VALUE_AGGREGATES, SCALAR_FUNCTIONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text()
# fenced blocks out first (their three backticks would otherwise shift the pairing of every later span);
# a name counts as documented only in an inline code span, never only in an example
INLINE = re.sub(r"^```[A-Za-z]*\n.*?^```", "", DOC, flags=re.M | re.S)
CODE_SPANS = {s.strip().replace("\\|", "|") for s in re.findall(r"`([^`]+)`", INLINE)}
WORDS = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*|\|\|", " ".join(CODE_SPANS)))


def _named(name: str) -> bool:
    return name in WORDS or name.lower() in WORDS or name.upper() in WORDS


def test_every_allowed_scalar_function_is_documented() -> None:
    names = {rule.name for rule in SCALAR_FUNCTIONS.values()} | set(NAMED_FUNCTIONS)
    missing = sorted(n for n in names if not _named(n))
    assert not missing, f"functions the allowlist admits but docs/sql.md does not name: {missing}"


def test_every_aggregate_and_alias_is_documented() -> None:
    missing = sorted(n for n in set(aggregates.ALIASES) | set(quantile.TWO_ARGUMENT_ALIASES) if not _named(n))
    for node in aggregates.SUPPORTED_AGGREGATES:
        if node is exp.WithinGroup:  # PERCENTILE_CONT(q) WITHIN GROUP (…): the syntax, named with PERCENTILE_CONT
            continue
        spellings = node.sql_names() or [node.key.upper()]
        if not any(_named(n) for n in spellings):
            missing.append("/".join(spellings))
    assert not missing, f"aggregates the registry accepts but docs/sql.md does not name: {missing}"


def test_every_refused_raw_value_aggregate_is_documented() -> None:
    missing = sorted(n for n in RAW_VALUE_AGGREGATES.values() if not _named(n))
    assert not missing, f"refused aggregates docs/sql.md does not explain: {missing}"


def test_every_setting_is_documented() -> None:
    missing = sorted(n for n in NAMES if n not in CODE_SPANS)
    assert not missing, f"settings docs/sql.md does not describe: {missing}"
