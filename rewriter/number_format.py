"""PostgreSQL's ``to_char(number, pattern)`` for released values (post-processing only).

DuckDB has no ``to_char`` for numbers, and its ``format``/``printf`` print differently, so the
post-processor (``proxy/post_duckdb.py``) registers :func:`to_char_number` as a function.
It only ever sees noisy or public values: ``to_char`` of a private row's number is refused by the
rewriter (``rewriter.totalize``), because a formatting call per private row is not needed for any
DP statistic.

It lives in the rewriter because it is pure (no I/O, no randomness) and the rewriter decides,
from the pattern alone (:func:`is_number_pattern`), whether ``to_char`` formats a number or a date.

The supported patterns (:func:`parse_pattern`) are the ones BI tools and analysts write for
numbers: an optional ``FM`` prefix, integer digits ``9`` (blank when not significant) and ``0``
(zero-filled from the first ``0`` on), group separators ``,``/``G``, and an optional decimal point
``.``/``D`` followed by ``9``/``0`` digits. The output is PostgreSQL 15's, character for character
(checked against a live server in ``tests/postgres/test_number_format.py``): a sign position
before the number, ``#`` in every digit position when the integer part does not fit, numeric
values rounded half away from zero and float8 values as C's ``printf`` rounds them (the exact
binary value, ties to even), and under ``FM`` no padding and no trailing zeros in ``9`` places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

from dpsql.errors import InvalidParameterValue

_PATTERN = re.compile(r"(?i:fm)?[90,G]*[90][90,G]*(?:[.D][90]*)?")
NUMERIC_PATTERN_CHARS = frozenset("90,.GD")


@dataclass(frozen=True)
class NumberPattern:
    """A parsed numeric pattern: integer-part tokens (``9``, ``0``, ``,``), fraction tokens, FM."""

    fill_mode: bool
    integer: tuple[str, ...]
    point: bool
    fraction: tuple[str, ...]

    @property
    def integer_digits(self) -> int:
        """How many digits the integer part can print."""
        return sum(1 for t in self.integer if t != ",")


_DBL_DIG = 15  # float8 significant digits PostgreSQL's to_char keeps


def is_number_pattern(pattern: str) -> bool:
    """True when ``pattern`` is one :func:`parse_pattern` accepts: it has at least one integer digit
    place (so a date pattern such as ``'YYYY-MM'`` is never read as a number pattern)."""
    return _PATTERN.fullmatch(pattern) is not None


def parse_pattern(pattern: str) -> NumberPattern:
    """Parse a numeric ``to_char`` pattern; raises InvalidParameterValue (22023) for anything else."""
    if not is_number_pattern(pattern):
        raise InvalidParameterValue(
            f"to_char() number pattern '{pattern}' is not supported",
            hint="use FM, 9, 0, the separators , and G, and a decimal point . or D (e.g. 'FM999,999.00')",
        )
    body = pattern[2:] if pattern[:2].upper() == "FM" else pattern
    m = re.search(r"[.D]", body)
    head, sep, tail = (body[: m.start()], m.group(), body[m.end() :]) if m else (body, "", "")
    return NumberPattern(
        fill_mode=body is not pattern,
        integer=tuple("," if c in ",G" else c for c in head),
        point=bool(sep),
        fraction=tuple(tail),
    )


def to_char_number(value: str | None, pattern: str, source_type: str = "DECIMAL") -> str | None:
    """``to_char(value, pattern)`` as PostgreSQL prints it. ``value`` is the number's text (as
    DuckDB casts it to VARCHAR); ``source_type`` its DuckDB type (``DOUBLE``/``FLOAT`` round like
    float8, anything else like numeric). NULL in, NULL out; infinities and NaN print ``#`` in
    every digit place, as PostgreSQL does for float8."""
    if value is None:
        return None
    p = parse_pattern(pattern)
    is_float = source_type.upper() in ("DOUBLE", "FLOAT", "REAL", "FLOAT8", "FLOAT4")
    try:
        x = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidParameterValue(f"to_char() takes a number, not '{value[:40]}'") from None
    if not x.is_finite():
        return _overflow(p, x.is_signed())
    places = len(p.fraction)
    kept = places
    if is_float:
        # the text is the shortest round-trip form; printf rounds the exact binary value, and
        # PostgreSQL keeps at most DBL_DIG (15) significant digits left and right of the point
        x = Decimal(float(x))
        int_len = len(format(abs(x).quantize(Decimal(1), rounding=ROUND_HALF_EVEN), "f"))
        kept = 0 if int_len >= _DBL_DIG else min(places, _DBL_DIG - int_len)
    rounded = x.quantize(Decimal(1).scaleb(-kept), rounding=ROUND_HALF_EVEN if is_float else ROUND_HALF_UP)
    # float8 keeps the sign of a value that rounds to zero (printf prints -0); numeric does not
    negative = x.is_signed() if is_float else (rounded.is_signed() and rounded != 0)
    digits = format(abs(rounded), "f")
    int_text, _, frac_text = digits.partition(".")
    int_text = int_text.lstrip("0")
    fraction = p.fraction[:kept]  # PostgreSQL drops the float8 places beyond DBL_DIG, point included
    frac_text = frac_text.ljust(kept, "0")
    if len(int_text) > p.integer_digits:
        return _overflow(p, negative, kept)
    frac = list(frac_text[:kept])
    if p.fill_mode:
        last_zero = max((i for i, t in enumerate(fraction) if t == "0"), default=-1)
        while len(frac) > last_zero + 1 and frac[-1] == "0":
            frac.pop()
    # a zero integer part prints one "0" when nothing follows it (no fraction places; for FM having
    # stripped them all, just before the point); before printed fraction digits it stays blank (" .50")
    zero_digit = not frac and not fraction
    out = _integer_part(p, int_text, zero_digit)
    if fraction and not frac and not "".join(out).replace(",", "").strip():
        out = [c for c in out if c != ","] + ["0"]  # FM stripped every place: "0." (separators before it stay blank)
    if fraction:  # a decimal point with no digit place after it prints nothing …
        out.append(".")
        out.extend(frac)
    text = "".join(out)
    if p.fill_mode:
        return ("-" if negative else "") + text.lstrip(" ")
    # the sign goes just left of the first printed character (a blank position before it, or the sign slot)
    body = text.lstrip(" ")
    return " " * (len(text) - len(body)) + ("-" if negative else " ") + body


def _integer_part(p: NumberPattern, int_text: str, zero_digit: bool) -> list[str]:
    """The integer positions: digits right-aligned, zero fill from the first ``0``, blanks before."""
    digit_slots = p.integer_digits
    tokens = [t for t in p.integer if t != ","]
    first_zero = next((i for i, t in enumerate(tokens) if t == "0"), digit_slots)
    start = digit_slots - len(int_text)  # first slot that holds a significant digit
    if not int_text and zero_digit:
        start = min(start, digit_slots - 1)  # zero with no fraction prints one "0"
        int_text = "0"
    filled = min(first_zero, start)
    out: list[str] = []
    slot = 0
    for t in p.integer:
        if t == ",":
            if p.fill_mode and slot <= filled:
                continue
            out.append("," if slot > filled else " ")
            continue
        if slot >= start:
            out.append(int_text[slot - start])
        elif slot >= filled:
            out.append("0")
        elif not p.fill_mode:
            out.append(" ")
        slot += 1
    return out


def _overflow(p: NumberPattern, negative: bool, fraction_places: int | None = None) -> str:
    """PostgreSQL's output when the number does not fit: ``#`` for every digit place (the sign and
    a decimal point are kept); a float8 shows only the fraction places within DBL_DIG."""
    parts = ["," if t == "," else "#" for t in p.integer]
    if p.point:
        parts.append(".")
        parts.extend("#" for _ in p.fraction[:fraction_places])
    text = "".join(parts)
    return ("-" if negative else "" if p.fill_mode else " ") + text
