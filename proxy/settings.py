"""Per-session DP settings: ``dp.epsilon``, ``dp.delta``, ``dp.session_epsilon`` (DESIGN §3).

``SET dp.epsilon = 0.5`` sets the (ε, δ) guarantee of each later query of the session, within the
policy's per-query range: ``[min_epsilon_per_query, max_epsilon_per_query]`` for ε and
``[min_delta_per_query, max_delta_per_query]`` for δ (under ``basic`` accounting δ may also be 0, a
pure-ε query). The floors keep probes from being nearly free (docs/privacy.md).
``dp.confidence`` (in (0, 1), default 0.95) is the level of ``DP_INTERVAL_LOW/HIGH``;
``dp.rounding`` (``auto`` | ``off``, default ``auto``) rounds floating results to the precision
their noise supports. Both shape post-processing only and cost nothing. ``dp.partition_selection``
(``auto`` | ``units`` | ``count``, default ``auto``) picks how groups without declared values are
selected (accountant/planner.py): by the planner's rule, always by a noisy unit count, or by COUNT(*)'s
own noisy value when the query has one — the same guarantee either way. ``dp.bias_epsilon``
(default 0.25, within the policy's per-query ε range) is the ε of ``EXPLAIN (BIAS)``, charged.
``SET dp.session_epsilon`` can only lower the session's cap, never raise it. Values are kept exactly (as fractions of their decimal text).
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import TYPE_CHECKING

from dpsql.errors import CantChangeRuntimeParam, InvalidParameterValue, UndefinedObject
from dpsql.policy import Policy

if TYPE_CHECKING:
    from dpsql.proxy.release import ReleaseOptions

NAMES = ("dp.epsilon", "dp.delta", "dp.session_epsilon", "dp.accounting", "dp.confidence", "dp.rounding", "dp.bias_epsilon",
         "dp.partition_selection")
DEFAULT_BIAS_EPSILON = Fraction(1, 4)
DEFAULT_CONFIDENCE = Fraction(95, 100)
ROUNDING_MODES = ("auto", "off")
SELECTION_PREFERENCES = ("auto", "units", "count")  # accountant.planner.SELECTION_PREFERENCES


def parse_number(name: str, text: str) -> Fraction:
    """The exact value of a setting's text, or InvalidParameterValue (22023)."""
    t = text.strip().strip("'\"").strip()
    try:
        value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise InvalidParameterValue(f'invalid value for parameter "{name}": "{t}"', hint="give a positive number, e.g. 0.5") from None
    return value


class DPSettings:
    """The DP settings of one session, validated against the policy."""

    def __init__(self, policy: Policy, user: str) -> None:
        self.policy = policy
        self.user = policy.user(user)
        self.epsilon: Fraction = policy.default_epsilon_for(user)
        self.delta: Fraction = policy.privacy.default_delta
        self.session_epsilon: Fraction | None = None
        self.confidence: Fraction = DEFAULT_CONFIDENCE
        self.rounding: str = "auto"
        self.partition_selection: str = "auto"
        self.bias_epsilon: Fraction = min(max(DEFAULT_BIAS_EPSILON, policy.privacy.min_epsilon_per_query),
                                          policy.privacy.max_epsilon_per_query)

    def post_key(self) -> str:
        """The release-shaping settings as text for the replay key (post-processing, and the
        partition-selection construction); "" at the defaults (so answers stored before these
        settings existed still replay)."""
        if self.confidence == DEFAULT_CONFIDENCE and self.rounding == "auto" and self.partition_selection == "auto":
            return ""
        key = f"confidence={self.confidence};rounding={self.rounding}"
        return key if self.partition_selection == "auto" else f"{key};selection={self.partition_selection}"

    def release_options(self) -> ReleaseOptions:
        """The settings of the release step (:class:`~dpsql.proxy.release.ReleaseOptions`)."""
        from dpsql.proxy.release import ReleaseOptions

        return ReleaseOptions(confidence=float(self.confidence), rounding=self.rounding)

    def for_statement(self, epsilon: Fraction | None, delta: Fraction | None, confidence: Fraction | None) -> DPSettings:
        """A copy carrying one statement's own ε, δ and confidence (GoogleSQL's ``OPTIONS``), each
        checked exactly as ``SET`` checks it (22023, the message naming the option); ``self`` is unchanged."""
        out = copy.copy(self)
        for option, name, value in (("epsilon", "dp.epsilon", epsilon), ("delta", "dp.delta", delta),
                                    ("confidence", "dp.confidence", confidence)):
            if value is None:
                continue
            try:
                out.set(name, str(value))
            except InvalidParameterValue as e:
                raise InvalidParameterValue(f"OPTIONS {option}: {e.message}", hint=e.hint) from None
        return out

    def set(self, name: str, text: str) -> None:
        """Apply ``SET name = text``; raises 22023 for a bad value, 42704 for an unknown dp.* name."""
        name = name.lower()
        pv = self.policy.privacy
        if name == "dp.epsilon":
            v = parse_number(name, text)
            if v <= 0:
                raise InvalidParameterValue("dp.epsilon must be greater than 0", hint="SET dp.epsilon = 0.5")
            if v > pv.max_epsilon_per_query:
                raise InvalidParameterValue(
                    f"dp.epsilon {_fmt(v)} is above the policy's max_epsilon_per_query ({_fmt(pv.max_epsilon_per_query)})",
                    hint=f"SET dp.epsilon to at most {_fmt(pv.max_epsilon_per_query)}",
                )
            if v < pv.min_epsilon_per_query:
                raise InvalidParameterValue(
                    f"dp.epsilon {_fmt(v)} is below the policy's min_epsilon_per_query ({_fmt(pv.min_epsilon_per_query)})",
                    hint=f"SET dp.epsilon to at least {_fmt(pv.min_epsilon_per_query)}: a cheaper query would make probing nearly free",
                )
            self.epsilon = v
        elif name == "dp.delta":
            v = parse_number(name, text)
            if v < 0 or (v == 0 and pv.accounting == "zcdp"):
                raise InvalidParameterValue("dp.delta must be greater than 0", hint="SET dp.delta = 1e-7")
            if v > pv.max_delta_per_query:
                raise InvalidParameterValue(
                    f"dp.delta {_fmt(v)} is above the policy's max_delta_per_query ({_fmt(pv.max_delta_per_query)})",
                    hint=f"SET dp.delta to at most {_fmt(pv.max_delta_per_query)}",
                )
            if 0 < v < pv.min_delta_per_query:
                raise InvalidParameterValue(
                    f"dp.delta {_fmt(v)} is below the policy's min_delta_per_query ({_fmt(pv.min_delta_per_query)})",
                    hint=f"SET dp.delta to at least {_fmt(pv.min_delta_per_query)}"
                    + ("" if pv.accounting == "zcdp" else ", or to 0 for a pure-ε query")
                    + ": a smaller δ would make probing nearly free",
                )
            self.delta = v
        elif name == "dp.session_epsilon":
            v = parse_number(name, text)
            if v <= 0:
                raise InvalidParameterValue("dp.session_epsilon must be greater than 0")
            current = self.effective_session_cap()
            if current is not None and v > current:
                raise InvalidParameterValue(
                    f"dp.session_epsilon can only be lowered (current cap {_fmt(current)})",
                    hint=f"SET dp.session_epsilon to at most {_fmt(current)}",
                )
            self.session_epsilon = v
        elif name == "dp.confidence":
            v = parse_number(name, text)
            if not 0 < v < 1:
                raise InvalidParameterValue(
                    f"dp.confidence must be between 0 and 1 (exclusive), not {_fmt(v)}", hint="SET dp.confidence = 0.95"
                )
            self.confidence = v
        elif name == "dp.bias_epsilon":
            v = parse_number(name, text)
            if not pv.min_epsilon_per_query <= v <= pv.max_epsilon_per_query:
                raise InvalidParameterValue(
                    f"dp.bias_epsilon must lie in the policy's per-query range [{_fmt(pv.min_epsilon_per_query)}, "
                    f"{_fmt(pv.max_epsilon_per_query)}]", hint="SET dp.bias_epsilon = 0.25",
                )
            self.bias_epsilon = v
        elif name == "dp.rounding":
            mode = text.strip().strip("'\"").strip().lower()
            if mode not in ROUNDING_MODES:
                raise InvalidParameterValue(
                    f'invalid value for parameter "dp.rounding": "{mode}"', hint="SET dp.rounding = 'auto' (or 'off')"
                )
            self.rounding = mode
        elif name == "dp.partition_selection":
            mode = text.strip().strip("'\"").strip().lower()
            if mode not in SELECTION_PREFERENCES:
                raise InvalidParameterValue(
                    f'invalid value for parameter "dp.partition_selection": "{mode}"',
                    hint="SET dp.partition_selection = 'auto' (or 'units', 'count')",
                )
            self.partition_selection = mode
        elif name == "dp.accounting":
            raise CantChangeRuntimeParam('parameter "dp.accounting" cannot be changed', hint="it is set by the policy")
        else:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"', hint=f"dp settings: {', '.join(NAMES)}")

    def reset(self, name: str) -> None:
        """``RESET name``: back to the policy default (the session cap cannot be raised by a reset)."""
        name = name.lower()
        if name == "dp.epsilon":
            self.epsilon = self.policy.default_epsilon_for(self.user.name) if self.user is not None else self.policy.privacy.default_epsilon
        elif name == "dp.delta":
            self.delta = self.policy.privacy.default_delta
        elif name == "dp.confidence":
            self.confidence = DEFAULT_CONFIDENCE
        elif name == "dp.rounding":
            self.rounding = "auto"
        elif name == "dp.partition_selection":
            self.partition_selection = "auto"
        elif name == "dp.bias_epsilon":
            self.bias_epsilon = min(max(DEFAULT_BIAS_EPSILON, self.policy.privacy.min_epsilon_per_query),
                                    self.policy.privacy.max_epsilon_per_query)
        elif name in ("dp.session_epsilon", "dp.accounting"):
            pass
        else:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')

    def show(self, name: str) -> tuple[str, str]:
        """(column name, text value) for ``SHOW name``."""
        name = name.lower()
        if name == "dp.epsilon":
            return name, _fmt(self.epsilon)
        if name == "dp.delta":
            return name, _fmt(self.delta)
        if name == "dp.session_epsilon":
            cap = self.effective_session_cap()
            return name, "unlimited" if cap is None else _fmt(cap)
        if name == "dp.accounting":
            return name, self.policy.privacy.accounting
        if name == "dp.confidence":
            return name, _fmt(self.confidence)
        if name == "dp.rounding":
            return name, self.rounding
        if name == "dp.partition_selection":
            return name, self.partition_selection
        if name == "dp.bias_epsilon":
            return name, _fmt(self.bias_epsilon)
        raise UndefinedObject(f'unrecognized configuration parameter "{name}"')

    def effective_session_cap(self) -> Fraction | None:
        """The session ε cap in force: the lower of the user's policy cap and the session's own."""
        policy_cap = self.user.session_epsilon if self.user is not None else self.policy.session_epsilon
        return _min(policy_cap, self.session_epsilon)


def _min(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    vals = [v for v in (a, b) if v is not None]
    return min(vals) if vals else None


def _fmt(v: Fraction) -> str:
    try:
        return f"{float(v):g}"
    except OverflowError:
        return "a number too large to show"
