"""The KV-cache format registry: the core's built-in formats and :func:`get` / :func:`available`.

KV formats are :class:`~polyquant.plugins.KVCacheFormatInfo` records registered through the
``polyquant_register_kv_formats`` hook, the core's own ones included (:mod:`polyquant.builtins`), so a
plugin's formats are found by :func:`get` and accepted by recipes' ``kv_cache.format`` like the
built-ins. Bits per element are stored bits (codes + norms/scales) at ``head_dim = 128``, without the
full-precision window:

* ``fp8_e4m3`` — FP8 E4M3 keys and values, one ``float32`` scale per token and head: 8.25.
* ``fp8_e4m3-tensor`` — FP8 E4M3, one static scale per stream (``scale=``, or from the first append): 8.
* ``fp8_e5m2`` — FP8 E5M2, per-token scale: 8.25.
* ``int8`` / ``int4`` / ``int2`` — asymmetric min-max per token and head (``float16`` scale and zero):
  8.25 / 4.25 / 2.25.
* ``kivi4`` / ``kivi2`` — KIVI: keys per channel (groups of 32 tokens), values per token (groups of 32
  channels), the last 128 tokens (at least; fewer than 160) in full precision: 5 / 3.
* ``turbo1`` … ``turbo4`` — TurboQuant-MSE at b = 1..4 bits for keys and values, ``float16`` norm:
  b + 0.125.
* ``turbo2.5`` — TurboQuant-MSE with the paper's outlier split, a quarter of the channels (32 of 128) at
  3 bits and the rest at 2: 2.25 code bits + two ``float16`` norms = 2.5.
* ``turbo3.5`` — the same split at 4 / 3 bits: 3.25 code bits + two norms = 3.5.
* ``turbo2-prod`` … ``turbo4-prod`` — keys TurboQuant-prod at b bits (b − 1 MSE bits + 1 QJL bit:
  unbiased attention scores; ``float16`` norm and γ): b + 0.25; values TurboQuant-MSE at b bits:
  b + 0.125.

Options (keyword arguments of :func:`get`): every format takes ``residual_length``; ``fp8_*``:
``scale`` (``-tensor``), ``scale_dtype``; ``int*``: ``group_size``; ``kivi*``: ``group_size``;
``turbo*``: ``seed``, ``codebook``, ``outlier_channels``, ``outlier_fraction``, ``outlier_bits``,
``rotation``.

Example:
    >>> fmt = get("kivi2", residual_length=64)
    >>> fmt.residual_length, fmt.key.axis, fmt.value.axis
    (64, 'channel', 'token')
    >>> "turbo3-prod" in available()
    True
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal

import torch

from polyquant.errors import FormatError
from polyquant.kvcache.cache import KVFormat
from polyquant.kvcache.fp8 import FP8KVConfig
from polyquant.kvcache.kivi import IntKVConfig, kivi_configs
from polyquant.kvcache.lloyd_max import CodebookDistribution
from polyquant.kvcache.rotation import RotationFactory
from polyquant.kvcache.turboquant import TurboQuantConfig
from polyquant.plugins.records import KVCacheFormatInfo

__all__ = [
    "available",
    "builtin_kv_formats",
    "fp8_format",
    "get",
    "int_format",
    "kivi_format",
    "turbo_format",
]


def fp8_format(
    *,
    name: str = "fp8_e4m3",
    element: Literal["e4m3", "e5m2"] = "e4m3",
    granularity: Literal["token", "tensor"] = "token",
    scale: float | None = None,
    scale_dtype: torch.dtype = torch.float32,
    residual_length: int = 0,
) -> KVFormat:
    """FP8 keys and values (:class:`~polyquant.kvcache.FP8KVConfig`).

    Example:
        >>> fp8_format(granularity="tensor").bits_per_element(128)
        8.0
    """
    config = FP8KVConfig(element=element, granularity=granularity, scale=scale, scale_dtype=scale_dtype)
    scope = "one static scale per stream" if granularity == "tensor" else "a float scale per token and head"
    return KVFormat(name, config, config, residual_length, f"FP8 {element.upper()} keys and values, {scope}")


def int_format(bits: int, *, name: str = "", group_size: int | None = None, residual_length: int = 0) -> KVFormat:
    """Integer keys and values, asymmetric min-max per token (groups of ``group_size`` channels).

    Example:
        >>> int_format(4).bits_per_element(128)
        4.25
    """
    config = IntKVConfig(bits=bits, axis="token", group_size=group_size)
    groups = "per token and head" if group_size is None else f"per token, groups of {group_size} channels"
    return KVFormat(name or f"int{bits}", config, config, residual_length, f"int{bits} keys and values {groups}")


def kivi_format(bits: int, *, name: str = "", group_size: int = 32, residual_length: int = 128) -> KVFormat:
    """KIVI: keys per channel over ``group_size`` tokens, values per token, the last tokens exact.

    Example:
        >>> kivi_format(2).bits_per_element(128)
        3.0
    """
    keys, values = kivi_configs(bits, group_size)
    description = (
        f"KIVI int{bits}: keys per channel (groups of {group_size} tokens), values per token "
        f"(groups of {group_size} channels), last {residual_length} tokens in full precision"
    )
    return KVFormat(name or f"kivi{bits}", keys, values, residual_length, description)


def turbo_format(
    bits: int,
    *,
    name: str = "",
    keys: Literal["mse", "prod"] = "mse",
    outlier_channels: int = 0,
    outlier_fraction: float = 0.0,
    outlier_bits: int | None = None,
    codebook: CodebookDistribution = "gaussian",
    seed: int = 0,
    rotation: RotationFactory | None = None,
    residual_length: int = 0,
) -> KVFormat:
    """TurboQuant: keys MSE or prod (unbiased scores), values MSE; values use ``seed + 1``.

    Example:
        >>> fmt = turbo_format(3, keys="prod")
        >>> fmt.key.bits_per_element(128), fmt.value.bits_per_element(128)
        (3.25, 3.125)
    """

    def config(variant: Literal["mse", "prod"], config_seed: int) -> TurboQuantConfig:
        return TurboQuantConfig(
            bits=bits,
            variant=variant,
            outlier_channels=outlier_channels,
            outlier_fraction=outlier_fraction,
            outlier_bits=outlier_bits,
            codebook=codebook,
            seed=config_seed,
            rotation=rotation,
        )

    split = ""
    if outlier_channels or outlier_fraction:
        share = f"{outlier_channels} channels" if outlier_channels else f"{outlier_fraction:.0%} of the channels"
        split = f", {share} at {outlier_bits if outlier_bits is not None else bits + 1} bits"
    key_kind = "TurboQuant-prod (unbiased scores)" if keys == "prod" else "TurboQuant-MSE"
    description = f"{bits}-bit {key_kind} keys, TurboQuant-MSE values{split}"
    suffix = "-prod" if keys == "prod" else ""
    return KVFormat(
        name or f"turbo{bits}{suffix}", config(keys, seed), config("mse", seed + 1), residual_length, description
    )


def _info(name: str, factory: Callable[..., KVFormat]) -> KVCacheFormatInfo:
    return KVCacheFormatInfo(name, factory, factory().description)


def builtin_kv_formats() -> list[KVCacheFormatInfo]:
    """The core's KV-cache formats (the table in the module docstring)."""
    partial = functools.partial
    infos = [
        _info("fp8_e4m3", partial(fp8_format, name="fp8_e4m3", element="e4m3", granularity="token")),
        _info("fp8_e4m3-tensor", partial(fp8_format, name="fp8_e4m3-tensor", element="e4m3", granularity="tensor")),
        _info("fp8_e5m2", partial(fp8_format, name="fp8_e5m2", element="e5m2", granularity="token")),
        *(_info(f"int{b}", partial(int_format, b, name=f"int{b}")) for b in (8, 4, 2)),
        *(_info(f"kivi{b}", partial(kivi_format, b, name=f"kivi{b}")) for b in (4, 2)),
        *(_info(f"turbo{b}", partial(turbo_format, b, name=f"turbo{b}", keys="mse")) for b in (1, 2, 3, 4)),
        *(
            _info(f"turbo{b}.5", partial(turbo_format, b, name=f"turbo{b}.5", keys="mse", outlier_fraction=0.25))
            for b in (2, 3)
        ),
        *(_info(f"turbo{b}-prod", partial(turbo_format, b, name=f"turbo{b}-prod", keys="prod")) for b in (2, 3, 4)),
    ]
    return infos


def available() -> list[str]:
    """Names of every registered KV-cache format (built-in and from plugins), sorted.

    Example:
        >>> available()[:3]
        ['fp8_e4m3', 'fp8_e4m3-tensor', 'fp8_e5m2']
    """
    from polyquant.plugins import get_plugin_manager

    return sorted(get_plugin_manager().get_kv_formats())


def _accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword options a factory accepts (``None`` when it takes ``**kwargs``)."""
    fixed = set(factory.keywords) if isinstance(factory, functools.partial) else set()
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty and p.name not in fixed
    ]


def get(name: str, /, **options: Any) -> KVFormat:
    """The registered KV-cache format ``name``, built with ``options``.

    Args:
        name: a registered name (:func:`available`), e.g. ``"turbo3-prod"``, ``"kivi2"``, ``"fp8_e4m3"``.
        **options: format options such as ``residual_length=64`` or ``seed=1``.

    Raises:
        FormatError: for an unknown name (the message lists the known ones), an option the format does
            not take (the message lists those it does) or an invalid option value.

    Example:
        >>> get("turbo2.5").bits_per_element(128)
        2.5
    """
    from polyquant.plugins import get_plugin_manager

    infos = get_plugin_manager().get_kv_formats()
    if name not in infos:
        raise FormatError(f"unknown KV-cache format {name!r}; known KV-cache formats: {', '.join(sorted(infos))}")
    factory = infos[name].factory
    accepted = _accepted_options(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise FormatError(
                f"KV-cache format {name!r} does not take option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
    fmt = factory(**options)
    if not isinstance(fmt, KVFormat):
        raise FormatError(
            f"the factory of KV-cache format {name!r} returned {type(fmt).__name__}, not a KVFormat; "
            f"fix the plugin that registers it ({get_plugin_manager().provider('kv_format', name)})"
        )
    return fmt
