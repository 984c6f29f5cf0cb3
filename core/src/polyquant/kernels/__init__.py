"""Kernel dispatch: the quantized ops, their references, and how a kernel is chosen for each call.

* :func:`linear`, :func:`conv`, :func:`dequantize`, :func:`quantize_activation` run an op through the
  best kernel for the call (see :mod:`polyquant.kernels.dispatch`).
* :func:`explain` says why each kernel was or was not chosen; :func:`use` and ``POLYQUANT_KERNELS`` force
  kernels by name.
* :mod:`polyquant.kernels.ops` holds the pure-PyTorch references that define each op.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("int8").quantize(torch.randn(16, 32))
    >>> y = polyquant.kernels.linear(torch.randn(2, 32), qt)
    >>> with polyquant.kernels.use(linear="reference"):
    ...     y_ref = polyquant.kernels.linear(torch.randn(2, 32), qt)
"""

from __future__ import annotations

from polyquant.kernels.dispatch import (
    OVERRIDE_ENV,
    KernelChoice,
    active_overrides,
    candidate_kernels,
    conv,
    dequantize,
    explain,
    kernel_availability,
    linear,
    quantize_activation,
    select_kernel,
    use,
)
from polyquant.kernels.ops import (
    conv_reference,
    dequantize_reference,
    linear_reference,
    quantize_activation_reference,
    reference_kernels,
)

__all__ = [
    "OVERRIDE_ENV",
    "KernelChoice",
    "active_overrides",
    "candidate_kernels",
    "conv",
    "conv_reference",
    "dequantize",
    "dequantize_reference",
    "explain",
    "kernel_availability",
    "linear",
    "linear_reference",
    "quantize_activation",
    "quantize_activation_reference",
    "reference_kernels",
    "select_kernel",
    "use",
]
