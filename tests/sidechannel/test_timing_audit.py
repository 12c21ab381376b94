"""T6 — the timing audit over the wire (issue 9; docs/privacy.md §5 "Timing").

Each probe of the corpus runs on twin servers, over TCP with psycopg, in coin-ordered pairs on the
database with and without the target unit; a probe fails when the two timing distributions are
distinguishable beyond the stated effect size (|AUC − ½| > 0.1) at the run's false-failure rate
1e-6 (the rule and its proof are in ``sidechannel_lib``). Probes the rewriter refuses before the
charge must be refused identically on both twins (same SQLSTATE; nothing runs).

Negative controls that the same rule must catch: a TRY amplifier injected into the bounded SQL
and a string blow-up past a disabled growth bound, both with the shield off, and the
candidate-group phase with many vs no raw candidates with the shield off.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from probes import FUNCTION_PROBES, Probe, corpus, string_blowup
from sidechannel_lib import RARE_CITY, Twin, Verdict, needs_layer1, paired, run_once, set_shield

from dpsql.rewriter.functions import NAMED_FUNCTIONS, SCALAR_FUNCTIONS

PAIRS = 60  # per product probe: distinguishable at ≥ 57/60 (see sidechannel_lib)
CONTROL_PAIRS = 80  # per negative control: caught at ≥ 72/80
#: SQLSTATEs a charged statement can answer with; anything else is a refusal before the charge
_AFTER_CHARGE = {None, "57014", "53200", "XX000"}


def _audit(twin: Twin, probe: Probe, pairs: int = PAIRS) -> Verdict | None:
    """The verdict on one probe, or None when both twins refuse it before the charge alike."""
    first = {side: run_once(twin.clients[side], probe.sql).sqlstate for side in (True, False)}
    assert first[True] == first[False], f"{probe.name}: outcome differs: {first}"
    if first[True] not in _AFTER_CHARGE:
        again = {side: run_once(twin.clients[side], probe.sql).sqlstate for side in (True, False)}
        assert again == first, f"{probe.name}: refusal not stable: {again} vs {first}"
        return None
    verdict = paired(twin.clients, probe.sql, pairs=pairs, name=probe.name)
    assert verdict.states[0] == verdict.states[1], f"{probe.name}: outcomes differ: {verdict}"
    return verdict


def _run_corpus(twin: Twin) -> list[str]:
    failures: list[str] = []
    for probe in corpus():
        verdict = _audit(twin, probe)
        print(f"T6 {probe.name}: " + ("refused before the charge on both" if verdict is None else str(verdict)))
        if verdict is not None and verdict.distinguishable:
            failures.append(str(verdict))
    return failures


def test_corpus_covers_every_allowlisted_function() -> None:
    names = {rule.name for rule in [*SCALAR_FUNCTIONS.values(), *NAMED_FUNCTIONS.values()]}
    assert names <= set(FUNCTION_PROBES), f"functions without a T6 probe: {sorted(names - set(FUNCTION_PROBES))}"


def test_product_with_shield(twin: Twin) -> None:
    """The product as shipped: every probe indistinguishable."""
    set_shield(twin, True)
    failures = _run_corpus(twin)
    assert not failures, "\n".join(failures)


@needs_layer1
def test_product_without_shield(twin: Twin) -> None:
    """The row-level fixes alone (shield off): every probe still indistinguishable."""
    set_shield(twin, False)
    failures = _run_corpus(twin)
    assert not failures, "\n".join(failures)


def test_control_try_amplifier_is_caught(twin: Twin, try_amplifier: Callable[[str], str]) -> None:
    set_shield(twin, False)
    verdict = paired(twin.clients, try_amplifier("Rareville"), pairs=CONTROL_PAIRS, name="control: TRY amplifier, shield off")
    print("T6", verdict)
    assert verdict.distinguishable, str(verdict)


@pytest.mark.parametrize("shield", [False, True], ids=["shield-off-control", "shield-on"])
def test_shield_hides_literal_probes(twin: Twin, try_amplifier: Callable[[str], str], shield: bool) -> None:
    """One database, one query shape, two literals: the TRY amplifier aimed at the target's city
    vs at a city nobody lives in (the bisection step of issue 9). Caught with the shield off;
    with it on both answer at the shape's sticky target."""
    set_shield(twin, shield)
    conn = twin.clients[True]
    verdict = paired((conn, conn), (try_amplifier("Rareville"), try_amplifier("Nowhere")),
                     pairs=CONTROL_PAIRS if not shield else PAIRS, warmup=5,
                     name=f"TRY amplifier, target literal vs other literal, shield {'on' if shield else 'off'}")
    print("T6", verdict)
    assert verdict.distinguishable is (not shield), str(verdict)


def test_control_string_blowup_is_caught(twin: Twin, growth_limit_off: None) -> None:
    set_shield(twin, False)
    verdict = paired(twin.clients, string_blowup(), pairs=CONTROL_PAIRS, name="control: string blow-up, growth bound off, shield off")
    print("T6", verdict)
    assert verdict.states == (frozenset({None}), frozenset({None})), str(verdict)
    assert verdict.distinguishable, str(verdict)


@needs_layer1
def test_string_blowup_product(twin: Twin) -> None:
    """The same blow-up against the product: refused before the charge on both twins, or (if
    accepted) indistinguishable by the row-level fixes alone (shield off)."""
    set_shield(twin, False)
    verdict = _audit(twin, Probe("string blow-up", string_blowup()))
    print("T6 string blow-up, product:", "refused before the charge on both" if verdict is None else verdict)
    assert verdict is None or not verdict.distinguishable, str(verdict)


_MANY = "SELECT note, COUNT(*) FROM payments WHERE amount > 0 GROUP BY note"  # ~1,500 raw candidate groups
_NONE = "SELECT note, COUNT(*) FROM payments WHERE amount > 100000 GROUP BY note"  # no raw candidate, same shape


@pytest.mark.parametrize("shield", [False, True], ids=["shield-off-control", "shield-on"])
def test_candidate_group_phase(twin: Twin, shield: bool) -> None:
    """Partition selection over ~1,500 vs 0 raw candidate groups (an exact count of units passing
    a filter): caught with the shield off, hidden with it on (same shape, sticky target)."""
    set_shield(twin, shield)
    conn = twin.clients[True]
    verdict = paired((conn, conn), (_MANY, _NONE), pairs=CONTROL_PAIRS if not shield else PAIRS, warmup=5,
                     name=f"candidate groups many vs none, shield {'on' if shield else 'off'}")
    print("T6", verdict)
    assert verdict.distinguishable is (not shield), str(verdict)


def test_target_alone_in_rare_city(twin: Twin) -> None:
    """The twins differ exactly in the target (a sanity check of the fixture, by public means:
    the policy's dpsql.budget view works on both and the probe SQL runs)."""
    for side in (True, False):
        assert run_once(twin.clients[side], f"SELECT COUNT(*) FROM payments WHERE city = '{RARE_CITY}'").sqlstate is None
