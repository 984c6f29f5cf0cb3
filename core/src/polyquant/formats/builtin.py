"""The built-in tensor formats, registered by the core plugin (:mod:`polyquant.builtins`).

Defaults follow what the reference implementations and serving runtimes use:

===================  ==============================  ==================================================
names                scaling                         notes
===================  ==============================  ==================================================
``int2``..``int7``   symmetric absmax, group 128     fp16 scales (GPTQ/AWQ-style), signed codes
``int8``             symmetric absmax, per channel   fp16 scales
``int1``             symmetric absmax, group 128     two's complement {-1, 0}: degenerate, use ``binary``
``uint1``..``uint8`` asymmetric min/max, group 128   fp16 scales and zero points, unsigned codes
``binary``           mean|W| per output channel      ±α (XNOR-Net / BitNet v1)
``ternary``          mean|W| per tensor              BitNet b1.58
``fp8_e4m3/e5m2``    absmax per channel, fp32        FP8 weights
``fp6_*``, ``fp4``   absmax per group 32, fp32
``mxfp*``            OCP MX: block 32, E8M0 scale    ``mxfp6`` = ``mxfp6_e2m3``; ``mxfp4_rceil`` rounds up
``nvfp4``            block 16 E4M3 + FP32 tensor     NVIDIA NVFP4
``nf4``              absmax per group 64, fp32       QLoRA NormalFloat
``int8_blockwise``   absmax per flat block 4096      bitsandbytes dynamic 8-bit map (see below)
``codebookN``        per-tensor learned levels       RTN init = data quantiles; fp32 levels, no scale
===================  ==============================  ==================================================

``int8_blockwise`` adaptation: bitsandbytes splits the flattened tensor into blocks of 4096 and pads the
last one; polyquant uses the same row-major flat blocks (:meth:`Granularity.per_flat_block`) but never
pads, so the element count must be a multiple of 4096 (or pick another block with ``with_options``).

Example:
    >>> [s.name for s in builtin_formats()][:3]
    ['int1', 'int2', 'int3']
"""

from __future__ import annotations

import functools

from polyquant.formats.elements import (
    DYNAMIC8,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    NF4,
    BinaryElement,
    CodebookElement,
    FloatElement,
    IntElement,
    TernaryElement,
)
from polyquant.formats.granularity import Granularity
from polyquant.formats.spec import FormatSpec

__all__ = ["builtin_formats"]

_G128 = Granularity.per_group(128)
_CHANNEL = Granularity.per_channel(0)


def _integers() -> list[FormatSpec]:
    specs = []
    for b in range(1, 9):
        gran = _CHANNEL if b == 8 else _G128
        where = "per output channel" if b == 8 else "per group of 128"
        note = " — degenerate {-1, 0}; prefer binary" if b == 1 else ""
        specs.append(
            FormatSpec(
                f"int{b}",
                IntElement(b),
                gran,
                scale_dtype="fp16",
                description=f"{b}-bit signed integers, symmetric absmax fp16 scale {where}{note}",
            )
        )
    for b in range(1, 9):
        specs.append(
            FormatSpec(
                f"uint{b}",
                IntElement(b, signed=False),
                _G128,
                symmetric=False,
                scale_dtype="fp16",
                description=f"{b}-bit unsigned integers with fp16 scale and zero point per group of 128",
            )
        )
    return specs


def _mx(name: str, element: FloatElement, rounding: str = "floor") -> FormatSpec:
    how = "scale rounded up (RCEIL, never clips)" if rounding == "rceil" else "OCP floor scale"
    return FormatSpec(
        name,
        element,
        Granularity.per_group(32),
        scale_dtype="e8m0",
        scale_rounding=rounding,
        description=f"OCP MX: {element.name} elements, shared E8M0 scale per block of 32 ({how})",
    )


def _floats() -> list[FormatSpec]:
    specs = [
        FormatSpec(e.name, e, _CHANNEL, description=f"{e.name.upper()} elements, fp32 absmax scale per output channel")
        for e in (FP8_E4M3, FP8_E5M2)
    ]
    specs += [
        FormatSpec(e.name, e, Granularity.per_group(32), description=f"{e.name.upper()} elements, fp32 scale per 32")
        for e in (FP6_E3M2, FP6_E2M3, FP4_E2M1)
    ]
    specs += [
        _mx("mxfp8", FP8_E4M3),
        _mx("mxfp8_e5m2", FP8_E5M2),
        _mx("mxfp6_e3m2", FP6_E3M2),
        _mx("mxfp6_e2m3", FP6_E2M3),
        _mx("mxfp6", FP6_E2M3),
        _mx("mxfp4", FP4_E2M1),
        _mx("mxfp4_rceil", FP4_E2M1, "rceil"),
        FormatSpec(
            "nvfp4",
            FP4_E2M1,
            Granularity.per_group(16),
            scale_dtype="e4m3",
            tensor_scale=True,
            description="NVIDIA NVFP4: E2M1 elements, E4M3 scale per block of 16, FP32 tensor scale",
        ),
    ]
    return specs


def _others() -> list[FormatSpec]:
    specs = [
        FormatSpec(
            "binary",
            BinaryElement(),
            _CHANNEL,
            scale_method="absmean",
            description="1-bit sign with mean|W| scale per output channel",
        ),
        FormatSpec(
            "ternary",
            TernaryElement(),
            scale_method="absmean",
            description="BitNet b1.58: {-1, 0, +1} times mean|W| per tensor",
        ),
        FormatSpec("nf4", NF4, Granularity.per_group(64), description="QLoRA NormalFloat4, fp32 absmax per 64"),
        FormatSpec(
            "int8_blockwise",
            DYNAMIC8,
            Granularity.per_flat_block(4096),
            description="bitsandbytes dynamic 8-bit map, fp32 absmax per flat block of 4096",
        ),
    ]
    specs += [
        FormatSpec(
            f"codebook{b}",
            CodebookElement(b),
            scale_method="none",
            description=f"{2**b}-level learned codebook per tensor (fp32 levels; RTN init = quantiles)",
        )
        for b in (2, 3, 4, 8)
    ]
    return specs


@functools.lru_cache(maxsize=1)
def _all() -> tuple[FormatSpec, ...]:
    return (*_integers(), *_floats(), *_others())


def builtin_formats() -> list[FormatSpec]:
    """Every built-in :class:`FormatSpec` (a fresh list; the specs themselves are immutable)."""
    return list(_all())
