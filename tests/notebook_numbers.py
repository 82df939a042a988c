"""The numbers a notebook's text quotes from its outputs, and whether a fresh run still
prints them.

A *quoted number* is a number in a markdown cell that also occurs in the notebook's
stored outputs; a number *occurs* in outputs if one of the numbers printed there lies
within half a unit of the quoted number's last printed digit (``0.72`` occurs in
``0.7165``; ``2,400`` in ``2400``), or within a relative tolerance where one is given.
Signs are ignored (the text writes "falls by 0.3" for a printed ``-0.3``), and so is
the difference between ``61 %`` and ``0.61``: such a pair is not recognised as a quote.

Numbers are read from the text of stream outputs and of ``text/plain`` results, not
from images, and from markdown source as written (LaTeX included: ``$0.9^{50}$`` holds
0.9 and 50). A small integer such as the 3 of "3 seeds" is almost always printed
somewhere, so it counts as quoted but is hardly ever caught; the check bites on numbers
with decimals and on large integers.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["Number", "numbers", "output_text", "output_numbers", "occurs", "quoted", "drift"]

_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?(?![\w]|\.\d)")


@dataclass(frozen=True)
class Number:
    """A number as printed: its ``text``, its unsigned ``value`` and ``half_unit``, half
    of one unit of its last printed digit."""

    text: str
    value: float
    half_unit: float


def numbers(text: str) -> list[Number]:
    """Every unsigned number printed in ``text``, in order (thousands separators and
    exponents understood; digits inside words such as ``mnist1d`` or ``01_intro`` and
    dotted versions such as ``2.4.6`` skipped)."""
    found = []
    for match in _NUMBER.finditer(text):
        whole, fraction, exponent = match.groups()
        decimals = len(fraction) - 1 if fraction else 0
        power = int(exponent[1:]) if exponent else 0
        value = float(whole.replace(",", "") + (fraction or "")) * 10.0 ** power
        found.append(Number(match.group(0), value, 0.5 * 10.0 ** (power - decimals)))
    return found


def output_text(cell) -> str:
    """The text a code cell printed or returned (stream and ``text/plain`` outputs)."""
    if cell.get("cell_type") != "code":
        return ""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def output_numbers(notebook) -> list[float]:
    """The values of every number in the notebook's outputs, sorted."""
    return sorted(n.value for cell in notebook.cells for n in numbers(output_text(cell)))


def occurs(number: Number, values, rtol: float = 0.0) -> bool:
    """Whether one of ``values`` lies within ``number``'s half unit, or within ``rtol``
    of its value, whichever is wider. ``values`` must be sorted."""
    tolerance = max(number.half_unit, rtol * number.value) * (1 + 1e-9)
    i = bisect_left(values, number.value - tolerance)
    return i < len(values) and values[i] <= number.value + tolerance


def quoted(notebook) -> list[tuple[int, Number]]:
    """``(cell index, number)`` for every number of a markdown cell that occurs in the
    notebook's outputs as stored."""
    values = output_numbers(notebook)
    return [(i, n) for i, cell in enumerate(notebook.cells) if cell.get("cell_type") == "markdown"
            for n in numbers(cell.get("source", "")) if occurs(n, values)]


def drift(stored, fresh, rtol: float = 0.0) -> list[str]:
    """The numbers the text of ``stored`` quotes from its outputs that the outputs of
    ``fresh`` (the same notebook executed again) no longer print, within half a unit of
    the last printed digit or ``rtol``; one line per number, naming its markdown cell.
    Empty: the text still matches the outputs."""
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol={rtol!r}: expected a finite number >= 0")
    values = output_numbers(fresh)
    return [f"markdown cell {i}: {n.text} (quoted from the stored outputs) is not printed by "
            f"the fresh run within {max(n.half_unit, rtol * n.value):.3g}"
            for i, n in quoted(stored) if not occurs(n, values, rtol)]
