"""The whole-statement timing shield: a statement that read private rows is answered on a public
time grid, at a target fixed before it ran (docs/privacy.md §5, "Timing").

Every charged statement (its result or any error raised after the charge) is answered at

    deadline = start + grid(level),   grid(k) = BASE · 2^(k / STEPS_PER_OCTAVE)

where ``start`` is when the statement's charge was committed (everything before it — parsing,
rewriting, validation on an empty schema, the ledger — depends on the query text, the policy and
the ledger only, never on a private row) and ``level`` is the **target** of the
statement's *shape* (the bounded SQL with every literal masked, :func:`shape_of`), read when the
statement is charged, before any private row is read. The target is a function of the times at
which earlier statements of the same shape were answered, and of nothing else:

* a statement that finishes before its deadline waits for it (sleep, then a busy spin for the last
  ``SPIN`` seconds, so the answer leaves within microseconds of the grid point);
* a statement that finishes after its deadline (an **overshoot**) is answered at the first grid
  point ≥ its elapsed time, and the shape's target moves up to that point (sticky);
* after ``DECAY_AFTER`` answers of the shape in a row at its target, the target moves down: one
  grid step, then 1, 2, 4 … (at most ``MAX_DECAY_STEP``) on each further decay without an
  overshoot in between, so a target left high by a cold first run comes down in a few dozen
  answers. Whether an answer was at its target is visible to whoever received it, so the decay
  adds nothing private; it only lets the next answer overshoot (at most one event per
  ``DECAY_AFTER`` answers).

Hence what an observer learns from the answer times of a shape is the sequence of overshoot
events (when and to which grid point); everything that runs below the target — the bounded SQL,
the candidate-group phase, noise, post-processing, errors — is hidden. Targets never exceed the
statement timeout's grid point (an answer later than that is a 57014 raised by the timeout).

A statement canceled by its client (CancelRequest, or the client's ``statement_timeout`` timer,
both calling :meth:`Deadline.cancel`) is answered at once: the time of the cancel is the
client's, not the data's.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

#: the grid: BASE · 2^(k / STEPS_PER_OCTAVE) seconds after the statement entered the engine
BASE = 0.005
STEPS_PER_OCTAVE = 8
#: answers at the target in a row after which the target moves down
DECAY_AFTER = 16
#: the largest single decay, in grid steps
MAX_DECAY_STEP = 8
#: the last part of a wait is busy-waited for a precise deadline
SPIN = 0.0005
#: shapes remembered (least recently used forgotten; a forgotten shape starts again at level 0)
MAX_SHAPES = 65_536

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?(?![\w.])")


def grid_point(level: int) -> float:
    """Seconds after the start at which grid ``level`` (≥ 0) lies."""
    return BASE * 2.0 ** (level / STEPS_PER_OCTAVE)


def level_for(elapsed: float) -> int:
    """The smallest level whose grid point is ≥ ``elapsed`` seconds (0 for anything ≤ BASE)."""
    if elapsed <= BASE:
        return 0
    k = max(0, math.ceil(STEPS_PER_OCTAVE * math.log2(elapsed / BASE) - 1e-9))
    while grid_point(k) < elapsed:
        k += 1
    while k > 0 and grid_point(k - 1) >= elapsed:
        k -= 1
    return k


def _floor_level(seconds: float) -> int:
    """The largest level whose grid point is ≤ ``seconds`` (0 if none is)."""
    k = level_for(seconds)
    return k if grid_point(k) <= seconds or k == 0 else k - 1


def shape_of(bounded_sql: str) -> str:
    """The statement's shape: its bounded SQL with every string and number literal masked, so
    queries that differ only in constants share one timing target (a probe cannot get a fresh
    target by changing a literal). Pure: computed from the rewrite alone."""
    return _NUMBER.sub("0", _STRING.sub("''", bounded_sql))


@dataclass
class _ShapeState:
    level: int = 0
    calm: int = 0  # answers at the target since the last move
    streak: int = 0  # decays since the last overshoot


class Canceled(Exception):
    """The wait for a deadline was cut short by :meth:`Deadline.cancel`."""


class Deadline:
    """The answer time of one charged statement; see :meth:`TimingShield.begin`."""

    def __init__(self, shield: TimingShield, shape: str, start: float, level: int) -> None:
        self._shield = shield
        self._shape = shape
        self.start = start
        self.level = level
        self._canceled = threading.Event()
        self._done = False

    @property
    def target(self) -> float:
        """The perf_counter time of the target grid point."""
        return self.start + grid_point(self.level)

    def cancel(self) -> None:
        """Stop a wait in progress (or the next one) at once; thread-safe."""
        self._canceled.set()

    def record_timeout(self) -> None:
        """Record that the statement ran into its statement timeout: an overshoot to the
        highest level (the timeout's); the 57014 is answered at once by the caller."""
        if not self._done:
            self._done = True
            self._shield._record(self._shape, self.level, self._shield._max_level + 1)

    def wait(self) -> float:
        """Wait until the answer time: the target, or for an overshoot the first grid point ≥ the
        elapsed time. Records the outcome in the shape's state (once) and returns the answer
        time (perf_counter). Raises :class:`Canceled` if :meth:`cancel` was called first or
        during the wait (the state is still updated)."""
        now = time.perf_counter()
        level = max(self.level, level_for(now - self.start))
        if not self._done:
            self._done = True
            self._shield._record(self._shape, self.level, level)
        answer = self.start + grid_point(level)
        canceled = self._canceled
        while True:
            if canceled.is_set():
                raise Canceled
            left = answer - time.perf_counter()
            if left <= 0:
                return answer
            if left > SPIN:
                canceled.wait(left - SPIN)


class TimingShield:
    """Per-shape targets of one engine. Thread-safe. ``enabled=False`` (tests and benchmarks
    only) answers at once and keeps no state; ``cap`` (seconds, e.g. the statement timeout)
    bounds every target."""

    def __init__(self, *, enabled: bool = True, cap: float = math.inf, max_shapes: int = MAX_SHAPES,
                 decay_after: int = DECAY_AFTER) -> None:
        self.enabled = enabled
        self._max_level = _floor_level(cap) if math.isfinite(cap) else 10_000
        self._max_shapes = max_shapes
        self._decay_after = decay_after
        self._states: OrderedDict[str, _ShapeState] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, shape: str, start: float) -> Deadline | None:
        """Fix the target of a statement of ``shape`` charged at ``start`` (perf_counter); call it
        once the charge is durable, before the statement reads data. None when
        the shield is disabled."""
        if not self.enabled:
            return None
        with self._lock:
            state = self._states.get(shape)
            level = state.level if state is not None else 0
            if state is not None:
                self._states.move_to_end(shape)
        return Deadline(self, shape, start, level)

    def level(self, shape: str) -> int:
        """The current target level of ``shape`` (0 for a shape never answered)."""
        with self._lock:
            state = self._states.get(shape)
            return state.level if state is not None else 0

    def _record(self, shape: str, target: int, answered: int) -> None:
        with self._lock:
            state = self._states.get(shape)
            if state is None:
                state = self._states[shape] = _ShapeState()
                if len(self._states) > self._max_shapes:
                    self._states.popitem(last=False)
            else:
                self._states.move_to_end(shape)
            if answered > target:  # an overshoot: the shape's target rises to where it answered
                state.level = min(max(state.level, answered), self._max_level)
                state.calm = state.streak = 0
            elif answered == state.level:
                state.calm += 1
                if state.calm >= self._decay_after and state.level > 0:
                    step = min(1 << max(state.streak - 1, 0), MAX_DECAY_STEP)
                    state.level = max(0, state.level - step)
                    state.calm = 0
                    state.streak += 1
