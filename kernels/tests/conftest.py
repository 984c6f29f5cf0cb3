"""Test setup for polyquant-kernels.

Triton reads ``TRITON_INTERPRET`` when it is first imported (``triton.language`` builds its functions
then), so the interpreter is switched on here, before any test module imports Triton. On a machine
with CUDA the variable is left alone and the Triton kernels are compiled for the GPU instead.
"""

from __future__ import annotations

import os
import sys

import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
