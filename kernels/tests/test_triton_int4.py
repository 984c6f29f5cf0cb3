"""The Triton int4 kernel, run on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1).

``conftest.py`` switches the interpreter on before Triton is imported. The QTensor-level checks of the
same kernel live in ``test_kernels.py``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'polyquant-kernels[triton]')")

from polyquant_kernels.triton_int4 import pack_nibbles


def _interpreter_ready() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        DEVICE == "cpu" and not _interpreter_ready(),
        reason="triton was imported before TRITON_INTERPRET=1 was set; run kernels/tests in their own pytest process",
    ),
]


def random_weight(n: int, k: int, group: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen)
    scale = torch.rand(k // group, n, generator=gen) + 0.05
    offset = torch.randn(k // group, n, generator=gen)
    dense = q.t().float() * scale.repeat_interleave(group, 0) + offset.repeat_interleave(group, 0)  # (K, N)
    return q, scale, offset, dense


def test_pack_nibbles_layout() -> None:
    q = torch.tensor([[1, 2, 3, 4], [15, 0, 7, 8]])
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2)
    assert packed.tolist() == [[0x21, 0x0F], [0x43, 0x87]]
    with pytest.raises(ValueError, match="even number of columns"):
        pack_nibbles(torch.zeros(2, 3, dtype=torch.int64))


@pytest.mark.parametrize(
    ("m", "n", "k", "group"),
    [(1, 64, 128, 32), (5, 48, 96, 32), (33, 80, 128, 64), (3, 16, 64, 64)],
    ids=["gemv", "tails", "two-row-blocks", "per-channel"],
)
def test_int4_matmul_matches_dense_float32(m: int, n: int, k: int, group: int) -> None:
    from polyquant_kernels.triton_int4_kernel import int4_matmul

    q, scale, offset, dense = random_weight(n, k, group)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    y = int4_matmul(x.to(DEVICE), pack_nibbles(q).to(DEVICE), scale.to(DEVICE), offset.to(DEVICE), group).cpu()
    expected = x.double() @ dense.double()
    assert y.dtype == torch.float32 and y.shape == (m, n)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_int4_matmul_half_inputs(dtype: torch.dtype) -> None:
    from polyquant_kernels.triton_int4_kernel import int4_matmul

    q, scale, offset, dense = random_weight(32, 64, 32, seed=2)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)).to(dtype)
    y = int4_matmul(x.to(DEVICE), pack_nibbles(q).to(DEVICE), scale.to(DEVICE), offset.to(DEVICE), 32).cpu()
    expected = x.double() @ dense.double()
    assert y.dtype == dtype
    err = (y.double() - expected).abs().max() / expected.abs().max()
    # on CUDA the weight meets x in x's dtype; then one rounding of the output: 8 (bf16) / 11 (fp16) bits
    assert err < 1e-2


def test_int4_matmul_rejects_inconsistent_shapes() -> None:
    from polyquant_kernels.triton_int4_kernel import int4_matmul

    q, scale, offset, _ = random_weight(16, 64, 32)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        int4_matmul(torch.randn(2, 32), pack_nibbles(q), scale, offset, 32)
