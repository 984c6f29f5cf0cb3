"""The ``kernels`` plugin: registers this package's kernels through polyquant's kernel hook.

Loaded by polyquant's plugin manager from the ``polyquant`` entry point group (name ``kernels``).
Registration imports neither Triton nor CUDA: each kernel's ``available()`` says whether it can run
here, and ``polyquant kernels`` shows the answer.

Example:
    >>> sorted(k.name for k in polyquant_register_kernels())
    ['cpu_int4pack', 'cpu_int8pack', 'cpu_w8a8_intmm', 'triton_int4']
"""

from __future__ import annotations

from polyquant.plugins import KernelSpec, hookimpl
from polyquant_kernels import cpu_int4, cpu_int8, triton_int4

__all__ = ["polyquant_register_kernels"]


@hookimpl
def polyquant_register_kernels() -> list[KernelSpec]:
    """The fast kernels of ``polyquant-kernels``."""
    return [cpu_int4.KERNEL, cpu_int8.INT8PACK_KERNEL, cpu_int8.W8A8_KERNEL, triton_int4.KERNEL]
