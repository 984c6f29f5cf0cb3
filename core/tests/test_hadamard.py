"""Hadamard matrices, the fast transform and random rotations: the reference checks of the shared algorithms
document (section 2, Rotations), every base order, invariance in fp64, dtypes, errors, docstring examples."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import polyquant.transforms as transforms
from polyquant.errors import FormatError, RecipeError
from polyquant.transforms import (
    BASE_ORDERS,
    MAX_BASE_ORDER,
    RandomHadamard,
    RandomOrthogonal,
    Rotation,
    constructions,
    hadamard,
    hadamard_construction,
    hadamard_factorization,
    hadamard_matrix,
    hadamard_size_supported,
    hadamard_transform,
    random_hadamard,
    random_orthogonal,
    rotation,
    rotations,
)

QUAROT_ORDERS = (172, 156, 140, 108, 60, 52, 36, 28, 40, 20, 12)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


# ------------------------------------------------------------------------------------------- matrices


def test_h12_is_hadamard() -> None:
    h = hadamard_matrix(12)
    assert h.dtype == torch.float64 and h.shape == (12, 12)
    assert torch.equal(h @ h.T, 12 * _eye(12))


@pytest.mark.parametrize("k", BASE_ORDERS)
def test_every_base_order_is_hadamard(k: int) -> None:
    h = hadamard_matrix(k)
    assert bool((h.abs() == 1).all())
    assert torch.equal(h @ h.T, k * _eye(k))
    assert hadamard_factorization(k) == (k, 1)


def test_base_orders_cover_quarot_and_williamson() -> None:
    for k in QUAROT_ORDERS:
        assert hadamard_size_supported(k)
    assert set(QUAROT_ORDERS) - {40} <= set(BASE_ORDERS)
    assert hadamard_factorization(40) == (20, 2)
    assert all(k <= MAX_BASE_ORDER and k % 4 == 0 for k in BASE_ORDERS)
    # 156, 172 (and 92, 116) have no Paley construction: they come from the Williamson sequences.
    for k, w in ((92, 23), (116, 29), (156, 39), (172, 43)):
        assert hadamard_construction(k) == f"H_{k}: Williamson (w = {w})"
    # Paley over GF(p^k) with k > 1: 28 = 27 + 1 (GF(3³)), 52 = 2·(25 + 1) (GF(5²)), 100 (GF(7²)), 244 (GF(3⁵)).
    assert hadamard_construction(28) == "H_28: Paley I (q = 27)"
    assert hadamard_construction(52) == "H_52: Paley II (q = 25)"
    assert hadamard_construction(100) == "H_100: Paley II (q = 49)"
    assert hadamard_construction(244) == "H_244: Paley I (q = 243)"


def test_williamson_blocks_are_symmetric_circulants_satisfying_the_sum_of_squares() -> None:
    for w, halves in constructions._WILLIAMSON_HALVES.items():
        blocks = [constructions._symmetric_circulant(s) for s in halves]
        assert all(b.shape == (w, w) and torch.equal(b, b.T) for b in blocks)
        assert torch.equal(sum(b @ b for b in blocks), 4 * w * _eye(w))


@pytest.mark.parametrize("n", [1, 2, 4, 64, 24, 40, 96, 768, 172 * 4])
def test_kronecker_sizes_are_hadamard(n: int) -> None:
    h = hadamard_matrix(n)
    assert torch.equal(h @ h.T, n * _eye(n))
    k, p = hadamard_factorization(n)
    assert k * p == n
    assert torch.equal(h, torch.kron(hadamard_matrix(k), hadamard_matrix(p)) if k > 1 else hadamard_matrix(p))


def test_factorization_of_model_sizes() -> None:
    assert hadamard_factorization(11008) == (172, 64)
    assert hadamard_factorization(14336) == (28, 512)
    assert hadamard_factorization(13824) == (108, 128)
    assert hadamard_factorization(18944) == (148, 128)  # Paley II, q = 73: beyond QuaRot's list
    assert hadamard_factorization(4096) == (1, 4096)
    assert hadamard_construction(11008) == "H_11008 = H_172 ⊗ H_64; H_172: Williamson (w = 43); H_64: Sylvester"
    assert hadamard_construction(64) == "H_64: Sylvester"


@pytest.mark.parametrize("n", [3, 6, 90, 86, 47 * 4, 59 * 64, 1000 * 3])
def test_unsupported_sizes(n: int) -> None:
    assert not hadamard_size_supported(n)
    with pytest.raises(FormatError, match="no Hadamard matrix of order"):
        hadamard_matrix(n)


def test_unsupported_messages_name_the_fix() -> None:
    with pytest.raises(FormatError, match="multiple of 172") as info:
        hadamard_factorization(86)
    assert "12, 20, 28" in str(info.value) and "orthogonal" in str(info.value)
    with pytest.raises(FormatError, match="no base order ≤ 256 has the odd part 47"):
        hadamard_factorization(47 * 8)


@pytest.mark.parametrize("n", [0, -4, 2.0, True, "64"])
def test_invalid_orders(n: object) -> None:
    assert not hadamard_size_supported(n)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="positive int"):
        hadamard_matrix(n)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="positive int"):
        random_hadamard(n, 0)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="positive int"):
        rotation(n, 0)  # type: ignore[arg-type]


def test_matrix_dtypes_and_cache_isolation() -> None:
    h8 = hadamard_matrix(20, dtype=torch.int8)
    assert h8.dtype == torch.int8 and torch.equal(h8.double(), hadamard_matrix(20))
    a = hadamard_matrix(12)
    a.zero_()  # callers get copies: the cache is unaffected
    assert torch.equal(hadamard_matrix(12) @ hadamard_matrix(12).T, 12 * _eye(12))
    with pytest.raises(FormatError, match="cannot hold −1"):
        hadamard_matrix(12, dtype=torch.uint8)


# ------------------------------------------------------------------------------------------- fast transform


def test_fast_path_768_equals_kron_h12_h64() -> None:
    n = 12 * 64
    m = torch.kron(hadamard_matrix(12), hadamard_matrix(64)) / math.sqrt(n)
    assert torch.allclose(m @ m.T, _eye(n), atol=1e-12)
    x = torch.randn(32, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = hadamard_transform(x)
    assert torch.allclose(y, x @ m.T, atol=1e-6, rtol=0)
    assert torch.allclose(hadamard_transform(x, transpose=True), x @ m, atol=1e-6, rtol=0)
    assert torch.allclose(hadamard_transform(x, normalize=False), x @ (m.T * math.sqrt(n)), atol=1e-6, rtol=0)
    # orthogonal: applying it to the identity gives an orthogonal matrix
    q = hadamard_transform(_eye(n))
    assert torch.allclose(q @ q.T, _eye(n), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 8, 20, 40, 52, 156 * 2, 172])
def test_fast_path_matches_matrix(n: int) -> None:
    x = torch.randn(5, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    h = hadamard_matrix(n) / math.sqrt(n)
    assert torch.allclose(hadamard_transform(x), x @ h.T, atol=1e-10)
    assert torch.allclose(hadamard_transform(x, transpose=True), x @ h, atol=1e-10)


def test_outlier_channel_is_spread() -> None:
    x = torch.randn(1000, 768, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 0] *= 50

    def peak_to_rms(t: torch.Tensor) -> float:  # over the whole tensor, as in the document
        return float(t.abs().amax() / t.pow(2).mean().sqrt())

    def row_peak_to_rms(t: torch.Tensor) -> float:  # per row, averaged
        return float((t.abs().amax(-1) / t.pow(2).mean(-1).sqrt()).mean())

    rotated = rotation(768, seed=0).apply(x)
    before, after = peak_to_rms(x), peak_to_rms(rotated)
    assert before > 40 and after < 8  # the document: ~84 → ~4.5 (here 80.1 → 4.3)
    assert row_peak_to_rms(x) > 15 and row_peak_to_rms(rotated) < 4  # here 19.0 → 2.7
    assert peak_to_rms(hadamard_transform(x)) < 8
    assert peak_to_rms(rotation(768, seed=0).apply_transpose(x)) < 8


@pytest.mark.parametrize("n", [64, 768, 96, 100, 90])
def test_rotation_preserves_products_in_fp64(n: int) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, n, generator=g, dtype=torch.float64)
    x = torch.randn(64, n, generator=g, dtype=torch.float64)
    q = rotation(n, seed=7)
    assert q.kind == ("hadamard" if hadamard_size_supported(n) else "orthogonal")
    ref = x @ w.T
    assert torch.allclose(q.apply(x) @ q.apply(w).T, ref, atol=1e-10, rtol=0)
    m = q.matrix()
    assert torch.allclose((x @ m) @ (w @ m).T, ref, atol=1e-10, rtol=0)
    assert torch.allclose(m @ m.T, _eye(n), atol=1e-12)


def test_orthogonal_fallback_for_unsupported_size() -> None:
    q = rotation(90, seed=0)
    assert isinstance(q, RandomOrthogonal) and isinstance(q, Rotation)
    assert torch.equal(q.matrix(), random_orthogonal(90, seed=0))
    x = torch.randn(4, 90, dtype=torch.float64)
    assert torch.allclose(q.apply(x), x @ q.matrix(), atol=1e-12)
    assert torch.allclose(q.apply_transpose(q.apply(x)), x, atol=1e-12)
    assert isinstance(rotation(64, seed=0, kind="orthogonal"), RandomOrthogonal)
    assert isinstance(rotation(64, seed=0, kind="hadamard"), RandomHadamard)


def test_transform_along_dim0_and_3d() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(96, 7, generator=g, dtype=torch.float64)
    h = hadamard_matrix(96) / math.sqrt(96)
    assert torch.allclose(hadamard_transform(x, dim=0), h @ x, atol=1e-10)
    x3 = torch.randn(3, 20, 4, generator=g, dtype=torch.float64)
    h20 = hadamard_matrix(20) / math.sqrt(20)
    expected = torch.einsum("ij,bjc->bic", h20, x3)
    assert torch.allclose(hadamard_transform(x3, dim=1), expected, atol=1e-10)
    assert torch.allclose(hadamard_transform(x3, dim=-2), expected, atol=1e-10)
    q = random_hadamard(20, seed=5)
    assert torch.allclose(q.apply(x3, dim=1), torch.einsum("bjc,ji->bic", x3, q.matrix()), atol=1e-10)
    assert torch.allclose(q.apply_transpose(x3, dim=1), torch.einsum("bjc,ij->bic", x3, q.matrix()), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtype_preserved(dtype: torch.dtype) -> None:
    x = torch.randn(8, 768, generator=torch.Generator().manual_seed(3)).to(dtype)
    ref = hadamard_transform(x.double())
    for y in (hadamard_transform(x), rotation(768, 0).apply(x), rotation(90, 0).apply(torch.zeros(2, 90, dtype=dtype))):
        assert y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(hadamard_transform(x).double(), ref, atol=tol * 4, rtol=tol)


def test_transform_supports_autograd() -> None:
    x = torch.randn(2, 24, dtype=torch.float64, requires_grad=True)
    hadamard_transform(x).pow(2).sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, 2 * x.detach(), atol=1e-12)


def test_transform_is_device_agnostic_on_meta() -> None:
    x = torch.empty(4, 11008, device="meta", dtype=torch.bfloat16)
    y = hadamard_transform(x)
    assert y.device.type == "meta" and y.shape == x.shape and y.dtype == torch.bfloat16
    assert rotation(11008, 0).apply(x).device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("n", [768, 11008, 90])
def test_cuda_matches_cpu(n: int) -> None:
    x = torch.randn(16, n, generator=torch.Generator().manual_seed(4))
    q = rotation(n, seed=0)
    for xs in (x, x.to(torch.bfloat16)):
        gpu = q.apply(xs.cuda())
        assert gpu.device.type == "cuda" and gpu.dtype == xs.dtype
        torch.testing.assert_close(gpu.cpu(), q.apply(xs))
        torch.testing.assert_close(q.apply_transpose(gpu).cpu(), q.apply_transpose(q.apply(xs)))
    if hadamard_size_supported(n):
        torch.testing.assert_close(hadamard_transform(x.cuda(), dim=-1).cpu(), hadamard_transform(x))


def test_transform_errors() -> None:
    with pytest.raises(FormatError, match="no Hadamard matrix of order 90"):
        hadamard_transform(torch.zeros(2, 90))
    with pytest.raises(FormatError, match="out of range"):
        hadamard_transform(torch.zeros(2, 64), dim=2)
    with pytest.raises(FormatError, match="floating"):
        hadamard_transform(torch.zeros(2, 64, dtype=torch.int32))
    with pytest.raises(FormatError, match="scalar"):
        hadamard_transform(torch.tensor(1.0))
    with pytest.raises(FormatError, match="has size 64 but the input has 32"):
        random_hadamard(64, 0).apply(torch.zeros(2, 32))
    with pytest.raises(FormatError, match="has size 90 but the input has 32"):
        rotation(90, 0).apply_transpose(torch.zeros(2, 32))


# ------------------------------------------------------------------------------------------- random rotations


def test_random_hadamard_is_deterministic_and_seeded() -> None:
    a, b, c = random_hadamard(768, 1), random_hadamard(768, 1), random_hadamard(768, 2)
    assert a == b and hash(a) == hash(b) and a != c
    assert torch.equal(a.signs, b.signs) and not torch.equal(a.signs, c.signs)
    assert set(a.signs.tolist()) == {-1.0, 1.0}
    m = a.matrix()
    assert torch.allclose(m, hadamard_matrix(768) * a.signs / math.sqrt(768))
    assert torch.allclose(a(torch.eye(768, dtype=torch.float64)), m, atol=1e-12)
    assert repr(a) == "RandomHadamard(n=768, seed=1)"


def test_random_orthogonal_is_haar_like_and_deterministic() -> None:
    q = random_orthogonal(64, seed=0)
    assert torch.equal(q, random_orthogonal(64, seed=0)) and not torch.equal(q, random_orthogonal(64, seed=1))
    assert torch.allclose(q.T @ q, _eye(64), atol=1e-12)
    assert random_orthogonal(8, 0, dtype=torch.float32).dtype == torch.float32
    # sign correction: averaged over seeds the entries have mean ≈ 0 (an uncorrected QR biases the diagonal).
    diag = torch.stack([torch.diagonal(random_orthogonal(8, s)) for s in range(200)])
    assert float(diag.mean().abs()) < 0.05
    with pytest.raises(FormatError, match="not floating"):
        random_orthogonal(8, 0, dtype=torch.int64)


def test_rotation_kind_errors() -> None:
    with pytest.raises(FormatError, match="kind='hadamard'") as info:
        rotation(90, seed=0, kind="hadamard")
    message = str(info.value)
    assert "172" in message and "156" in message and "kind='auto'" in message
    with pytest.raises(RecipeError, match="kind: 'dense' is invalid"):
        rotation(64, seed=0, kind="dense")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="seed"):
        rotation(64, seed=-1)
    with pytest.raises(RecipeError, match="seed"):
        random_hadamard(64, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="no Hadamard matrix of order 90"):
        random_hadamard(90, 0)


_SIZES = [1, 2, 12, 20, 28, 40, 64, 96, 100, 172, 768, 90]


@settings(max_examples=40, deadline=None)
@given(
    n=st.sampled_from(_SIZES),
    seed=st.integers(0, 2**32),
    rows=st.integers(0, 4),
    double=st.booleans(),
)
def test_apply_then_apply_transpose_is_identity(n: int, seed: int, rows: int, double: bool) -> None:
    dtype = torch.float64 if double else torch.float32
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed % 1000), dtype=dtype)
    q = rotation(n, seed)
    y = q.apply(x)
    assert y.shape == x.shape
    tol = 1e-10 if double else 1e-5
    assert torch.allclose(q.apply_transpose(y), x, atol=tol)
    assert torch.allclose(q.apply(q.apply_transpose(x)), x, atol=tol)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=tol * 10)


# ------------------------------------------------------------------------------------------- docs


@pytest.mark.parametrize("module", [transforms, constructions, hadamard, rotations], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
