"""Fast kernels for polyquant, registered through its kernel hook (plugin name ``kernels``).

Once installed, ``polyquant.kernels.linear`` picks these automatically when they fit a call:

* ``cpu_int4pack``: int4/uint4 group-wise weight-only linear on CPU (aten int4 kernel, bfloat16 inside).
* ``cpu_int8pack``: int8 per-channel weight-only linear on CPU (aten int8 kernel, bfloat16 inside).
* ``cpu_w8a8_intmm``: int8 weights × int8 activations on CPU (``torch._int_mm``, exact int32 sums).
* ``triton_int4``: int4/uint4 weight-only linear on CUDA, fused Triton dequantize + matmul.

Other formats run on the core's reference kernels; ``polyquant kernels`` lists every kernel with why it
is or is not available here.

Example:
    >>> import polyquant_kernels
    >>> polyquant_kernels.__version__
    '0.1.0'
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
