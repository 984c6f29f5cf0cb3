"""The built-in recipe presets (``polyquant.quantize(model, "w4a16-g128")``).

Naming: ``w<bits>a<bits>`` states weight and activation bits (``a16`` = activations left in the model's
dtype), ``-g<N>`` a group size. Every preset quantizes ``nn.Linear`` modules and keeps what the model
adapter marks as sensitive (embeddings, output heads) in high precision.

==============  ============================================================  ========
preset          weights                                                        method
==============  ============================================================  ========
``w8a16``       int8, symmetric, per output channel                            rtn
``w4a16``       int4, asymmetric, per output channel (no groups: fastest)      rtn
``w4a16-g128``  int4, asymmetric, groups of 128 (better accuracy, ~0.25 b/w)   rtn
``w3a16``       int3, asymmetric, groups of 128, MSE clipping search           mse
``w2a16``       int2, asymmetric, groups of 64, MSE clipping search            mse
``w8a8``        int8 per channel + int8 activations, per token, dynamic        rtn
``w8a8-fp8``    fp8 e4m3 per channel + fp8 e4m3 activations, per token, dyn.   rtn
``fp8``         fp8 e4m3 per channel, weight-only                              rtn
``nvfp4``       NVFP4 (E2M1, E4M3 scale per 16, fp32 tensor scale)             rtn
``mxfp4``       MXFP4 (E2M1, E8M0 scale per 32)                                rtn
``nf4``         NF4 (bitsandbytes levels, absmax per 64)                       rtn
``ternary``     ternary {-1, 0, 1} × absmean scale (BitNet b1.58)              rtn
``w8a8-smoothquant`` SmoothQuant α 0.5, then ``w8a8`` (needs calibration data)     rtn
``mixed-3.5``   int2/3/4/8 per layer for 3.5 b/w (Hessian sensitivity), then GPTQ mixed
``w4a8``        int4 symmetric per channel + int8 activations per token (dyn.)  mse
``w4a16-gptq``  int4, asymmetric, groups of 128                                gptq
``w3a16-gptq``  int3, asymmetric, groups of 128                                gptq
``w2a16-gptq``  int2, asymmetric, groups of 64                                 gptq
``w4a16-hadamard-gptq`` QuaRot rotation, then ``w4a16-gptq``                      gptq
``w2a16-hadamard-gptq`` QuaRot rotation, then int2 groups of 64 by GPTQ             gptq
``w4a16-awq``   int4, asymmetric, groups of 128                                awq
``w4a16-hqq``   int4, asymmetric, groups of 64                                 hqq
``w3a16-hqq``   int3, asymmetric, groups of 64                                 hqq
``w2a16-hqq``   int2, asymmetric, groups of 16                                 hqq
==============  ============================================================  ========

The ``gptq`` and ``awq`` presets need calibration data (``polyquant.quantize(model, "w4a16-gptq", calibration=...)``);
the ``hqq`` presets need none. HQQ's groups are smaller than GPTQ's (its defaults: 64, and 16 at 2 bits)
because it has no error feedback to compensate a coarse range.

Below 4 bits round-to-nearest with min-max ranges wastes levels on outliers, so ``w3a16`` and ``w2a16``
search a clipping ratio per group (``mse``); 2-bit uses smaller groups (64) because four levels cannot
cover a 128-wide range well.

Example:
    >>> [p.name for p in builtin_presets()][:3]
    ['w8a16', 'w4a16', 'w4a16-g128']
"""

from __future__ import annotations

from typing import Any

from polyquant.plugins.records import RecipePreset

__all__ = ["builtin_presets"]

_INT8_TOKEN = {"format": "int8", "granularity": "token", "dynamic": True}
_FP8_TOKEN = {"format": "fp8_e4m3", "granularity": "token", "dynamic": True}


def _preset(name: str, description: str, weights: dict[str, Any], **extra: Any) -> RecipePreset:
    recipe: dict[str, Any] = {"name": name, "description": description, "weights": weights, **extra}
    return RecipePreset(name=name, recipe=recipe, description=description)


def builtin_presets() -> list[RecipePreset]:
    """The core's presets, registered by :mod:`polyquant.builtins` through the recipe hook."""
    return [
        _preset(
            "w8a16",
            "int8 weights per channel (symmetric), 16-bit activations",
            {"format": "int8", "group_size": 0, "symmetric": True},
        ),
        _preset(
            "w4a16",
            "int4 weights per channel (asymmetric), 16-bit activations",
            {"format": "int4", "group_size": 0, "symmetric": False},
        ),
        _preset(
            "w4a16-g128",
            "int4 weights in groups of 128 (asymmetric), 16-bit activations",
            {"format": "int4", "group_size": 128, "symmetric": False},
        ),
        _preset(
            "w3a16",
            "int3 weights in groups of 128 (asymmetric) with MSE clipping search",
            {"format": "int3", "group_size": 128, "symmetric": False},
            method="mse",
        ),
        _preset(
            "w2a16",
            "int2 weights in groups of 64 (asymmetric) with MSE clipping search",
            {"format": "int2", "group_size": 64, "symmetric": False},
            method="mse",
        ),
        _preset(
            "w8a8",
            "int8 weights per channel, int8 activations per token (dynamic)",
            {"format": "int8", "group_size": 0, "symmetric": True},
            activations=_INT8_TOKEN,
        ),
        _preset(
            "w8a8-fp8",
            "fp8 e4m3 weights per channel, fp8 e4m3 activations per token (dynamic)",
            {"format": "fp8_e4m3", "group_size": 0},
            activations=_FP8_TOKEN,
        ),
        _preset("fp8", "fp8 e4m3 weights per channel, 16-bit activations", {"format": "fp8_e4m3", "group_size": 0}),
        _preset("nvfp4", "NVFP4 weights (E2M1, E4M3 scale per 16, fp32 tensor scale)", {"format": "nvfp4"}),
        _preset("mxfp4", "MXFP4 weights (E2M1, E8M0 scale per 32)", {"format": "mxfp4"}),
        _preset("nf4", "NF4 weights (absmax per 64), 16-bit activations", {"format": "nf4"}),
        _preset("ternary", "ternary weights {-1, 0, 1} with an absmean scale (BitNet b1.58)", {"format": "ternary"}),
        _preset(
            "w8a8-smoothquant",
            "SmoothQuant (alpha 0.5) then int8 weights per channel, int8 activations per token (dynamic)",
            {"format": "int8", "group_size": 0, "symmetric": True},
            activations=_INT8_TOKEN,
            transforms=["smoothquant"],
        ),
        _preset(
            "mixed-3.5",
            "int2/3/4/8 weights (groups of 64) allocated per layer for 3.5 bits/weight by Hessian sensitivity, "
            "then GPTQ; needs calibration data (set method_args.budget for another budget)",
            {"format": "int4", "group_size": 64, "symmetric": False},
            method="mixed",
            method_args={"budget": 3.5},
        ),
        _preset(
            "w4a8",
            "int4 weights per channel (symmetric, MSE clipping), int8 activations per token (dynamic)",
            {"format": "int4", "group_size": 0, "symmetric": True},
            activations=_INT8_TOKEN,
            method="mse",
        ),
        *(
            _preset(
                f"w{bits}a16-gptq",
                f"int{bits} weights in groups of {group} (asymmetric) by GPTQ; needs calibration data",
                {"format": f"int{bits}", "group_size": group, "symmetric": False},
                method="gptq",
            )
            for bits, group in ((4, 128), (3, 128), (2, 64))
        ),
        *(
            _preset(
                f"w{bits}a16-hadamard-gptq",
                f"QuaRot Hadamard rotation, then int{bits} weights in groups of {group} (asymmetric) by GPTQ; "
                "needs calibration data and a Llama-family model",
                {"format": f"int{bits}", "group_size": group, "symmetric": False},
                method="gptq",
                transforms=["hadamard"],
            )
            for bits, group in ((4, 128), (2, 64))
        ),
        _preset(
            "w4a16-awq",
            "int4 weights in groups of 128 (asymmetric) by AWQ (scale + clip search); needs calibration data",
            {"format": "int4", "group_size": 128, "symmetric": False},
            method="awq",
        ),
        *(
            _preset(
                f"w{bits}a16-hqq",
                f"int{bits} weights in groups of {group} (asymmetric) by HQQ, calibration-free",
                {"format": f"int{bits}", "group_size": group, "symmetric": False},
                method="hqq",
            )
            for bits, group in ((4, 64), (3, 64), (2, 16))
        ),
    ]
