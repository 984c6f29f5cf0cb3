"""The ``int4_pow2`` format: 4-bit integers with power-of-two (shift-friendly) group scales.

Every weight is ``q · 2**k`` with an integer ``q`` in ``−7..7`` and one integer exponent ``k`` per group
of 32 weights, so dequantization is a shift (``ldexp``) instead of a multiplication, and the scale costs
8 bits per group (4.25 bits per weight in total, against 4.5 for ``int4`` with fp16 scales in groups of 32).

It is assembled from the core's parts, with no new numerics:

* the element is the minifloat ``E1M2`` (:class:`~polyquant.formats.FloatElement` with 1 exponent bit,
  2 mantissa bits, bias 1). Its 15 values are exactly ``{−7, …, 7} / 4``: sign-magnitude 4-bit integers
  divided by four;
* the scale is an OCP-MX-style E8M0 power of two ``X`` rounded *up* (``scale_rounding="rceil"``), so
  ``amax / X ≤ 1.75`` and nothing is clipped. The integer step is ``X / 4``, again a power of two.

Compared with ``int4`` (float scales) it trades some accuracy for cheaper storage and arithmetic: a group's
range uses between half and all of the grid. The ``mse`` quantizer (``method: mse``) recovers part of the
gap by trying the next smaller power of two where clipping the largest weights pays off.

Example:
    >>> import torch
    >>> qt = INT4_POW2.quantize(torch.randn(8, 64))
    >>> qt.bits_per_weight
    4.25
    >>> integer_levels()
    [-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

import torch

from polyquant.formats import FloatElement, FormatSpec, Granularity

__all__ = ["DEFAULT_GROUP_SIZE", "ELEMENT", "FORMAT_NAME", "INT4_POW2", "integer_levels"]

FORMAT_NAME = "int4_pow2"
DEFAULT_GROUP_SIZE = 32

#: Sign-magnitude 4-bit integers divided by four, as the E1M2 minifloat.
ELEMENT = FloatElement(ebits=1, mbits=2, bias=1)

INT4_POW2 = FormatSpec(
    name=FORMAT_NAME,
    element=ELEMENT,
    granularity=Granularity.per_group(DEFAULT_GROUP_SIZE),
    scale_dtype="e8m0",
    scale_rounding="rceil",
    description="int4 (-7..7) with power-of-two E8M0 scales per group of 32; dequantization is a shift (example)",
)


def integer_levels() -> list[int]:
    """The integer values ``q`` a weight can take before its group's power-of-two step is applied.

    Example:
        >>> len(integer_levels())
        15
    """
    values = ELEMENT.decode(torch.arange(1 << ELEMENT.bits, dtype=torch.uint8)) * 4
    return sorted({int(v) for v in values.tolist()})
