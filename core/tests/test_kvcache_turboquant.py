"""TurboQuant-MSE and -prod on random unit vectors (algorithms.md §3.1, check 1), outlier split, rotations.

Measured at the time of writing (d = 128, 4000 unit vectors, 256 unit queries, seed 0):
D_mse 0.3611 / 0.1161 / 0.0340 / 0.0093; d·D_prod 1.567 / 0.567 / 0.182 / 0.053; prod slopes
0.998 / 0.999 / 1.000 / 1.000; MSE-only 1-bit slope 0.6366 (2/π = 0.6366).
"""

from __future__ import annotations

import math

import pytest
import torch

from polyquant.errors import FormatError
from polyquant.kvcache import MatrixRotation, TurboQuantConfig, random_orthogonal

D = 128
D_MSE = {1: 0.360, 2: 0.116, 3: 0.034, 4: 0.0093}
D_PROD = {1: 1.55, 2: 0.55, 3: 0.185, 4: 0.051}


@pytest.fixture(scope="module")
def unit_vectors() -> torch.Tensor:
    u = torch.randn(1, 1, 4000, D, generator=torch.Generator().manual_seed(1234))
    return u / u.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def queries() -> torch.Tensor:
    q = torch.randn(1, 1, 256, D, generator=torch.Generator().manual_seed(99))
    return q / q.norm(dim=-1, keepdim=True)


def _slope(true: torch.Tensor, estimate: torch.Tensor) -> float:
    """Least-squares slope of ``estimate`` regressed on ``true`` (with intercept)."""
    x, y = true.flatten().double(), estimate.flatten().double()
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_distortion(unit_vectors: torch.Tensor, bits: int) -> None:
    quantizer = TurboQuantConfig(bits=bits).build()
    rec = quantizer.decode(quantizer.encode(unit_vectors))
    d_mse = float(((unit_vectors - rec) ** 2).sum(-1).mean())
    assert d_mse == pytest.approx(D_MSE[bits], rel=0.05)
    assert 4.0**-bits < d_mse < 2.72 * 4.0**-bits  # the paper's lower and upper bounds


def test_exact_codebook_distortion(unit_vectors: torch.Tensor) -> None:
    quantizer = TurboQuantConfig(bits=3, codebook="beta").build()
    rec = quantizer.decode(quantizer.encode(unit_vectors))
    assert float(((unit_vectors - rec) ** 2).sum(-1).mean()) == pytest.approx(D_MSE[3], rel=0.05)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_prod_is_unbiased(unit_vectors: torch.Tensor, queries: torch.Tensor, bits: int) -> None:
    quantizer = TurboQuantConfig(bits=bits, variant="prod").build()
    codes = quantizer.encode(unit_vectors)
    true = queries @ unit_vectors.transpose(-1, -2)
    estimate = quantizer.scores(queries, codes)
    assert D * float(((estimate - true) ** 2).mean()) == pytest.approx(D_PROD[bits], rel=0.1)
    assert _slope(true, estimate) == pytest.approx(1.0, abs=0.02)
    # the scores are inner products with the stored reconstruction
    torch.testing.assert_close(estimate, queries @ quantizer.decode(codes).transpose(-1, -2), atol=2e-5, rtol=1e-4)


def test_mse_only_one_bit_is_biased_by_two_over_pi(unit_vectors: torch.Tensor, queries: torch.Tensor) -> None:
    quantizer = TurboQuantConfig(bits=1).build()
    estimate = quantizer.scores(queries, quantizer.encode(unit_vectors))
    assert _slope(queries @ unit_vectors.transpose(-1, -2), estimate) == pytest.approx(2 / math.pi, abs=0.02)


def test_packed_codes_and_norms() -> None:
    x = torch.randn(2, 3, 5, D) * 7
    codes = TurboQuantConfig(bits=3).build().encode(x)
    assert codes["idx"].dtype == torch.uint8 and codes["idx"].shape == (2, 3, 5, 48)
    assert codes["norm"].dtype == torch.float16 and codes["norm"].shape == (2, 3, 5, 1)
    torch.testing.assert_close(codes["norm"].float(), x.norm(dim=-1, keepdim=True), rtol=1e-3, atol=0)
    prod = TurboQuantConfig(bits=3, variant="prod").build().encode(x)
    assert {n: tuple(t.shape[-1:]) for n, t in prod.items()} == {
        "idx": (32,),
        "norm": (1,),
        "gamma": (1,),
        "qjl": (16,),
    }
    assert "idx" not in TurboQuantConfig(bits=1, variant="prod").build().encode(x)  # pure QJL


def test_reconstruction_scales_with_the_norm() -> None:
    u = torch.randn(1, 2, 50, D, generator=torch.Generator().manual_seed(5))
    u = u / u.norm(dim=-1, keepdim=True)
    quantizer = TurboQuantConfig(bits=2).build()
    torch.testing.assert_close(quantizer.decode(quantizer.encode(4 * u)), 4 * quantizer.decode(quantizer.encode(u)))
    zero = quantizer.decode(quantizer.encode(torch.zeros(1, 2, 1, D)))
    assert torch.equal(zero, torch.zeros_like(zero))


def test_seeded_and_deterministic() -> None:
    x = torch.randn(1, 2, 10, 64)
    a = TurboQuantConfig(bits=2, seed=3).build().encode(x)
    b = TurboQuantConfig(bits=2, seed=3).build().encode(x)
    c = TurboQuantConfig(bits=2, seed=4).build().encode(x)
    assert torch.equal(a["idx"], b["idx"]) and not torch.equal(a["idx"], c["idx"])


def test_outlier_split_finds_outlier_channels_and_helps() -> None:
    gen = torch.Generator().manual_seed(0)
    scale = torch.ones(D)
    hot = torch.tensor([3, 17, 40, 41, 90, 100, 101, 127])
    scale[hot] = 12.0
    x = torch.randn(1, 2, 2000, D, generator=gen) * scale
    split = TurboQuantConfig(bits=2, outlier_channels=8, outlier_bits=4).build()
    rec_split = split.decode(split.encode(x))
    assert split.outlier_channels is not None
    assert split.outlier_channels.tolist() == [hot.tolist(), hot.tolist()]  # per head
    plain = TurboQuantConfig(bits=2).build()
    rec_plain = plain.decode(plain.encode(x))
    err_split = float(((rec_split - x) ** 2).sum() / (x**2).sum())
    err_plain = float(((rec_plain - x) ** 2).sum() / (x**2).sum())
    assert err_split < 0.5 * err_plain
    assert split.state_nbytes == 2 * D * 2  # int16 permutation per head


def test_split_scores_match_decode() -> None:
    x = torch.randn(2, 2, 30, D)
    quantizer = TurboQuantConfig(bits=3, variant="prod", outlier_fraction=0.25).build()
    codes = quantizer.encode(x)
    assert sorted(codes) == [
        "outlier.gamma", "outlier.idx", "outlier.norm", "outlier.qjl",
        "regular.gamma", "regular.idx", "regular.norm", "regular.qjl",
    ]  # fmt: skip
    q = torch.randn(2, 2, 4, D)
    torch.testing.assert_close(
        quantizer.scores(q, codes), q @ quantizer.decode(codes).transpose(-1, -2), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    ("config", "bits"),
    [
        (TurboQuantConfig(bits=3), 3.125),
        (TurboQuantConfig(bits=3, variant="prod"), 3.25),
        (TurboQuantConfig(bits=2, outlier_fraction=0.25), 2.5),  # the paper's "2.5-bit": 2.25 code bits + 2 norms
        (TurboQuantConfig(bits=2, outlier_channels=64, outlier_bits=3), 2.75),
        (TurboQuantConfig(bits=1, variant="prod"), 1.25),
    ],
)
def test_bits_per_element(config: TurboQuantConfig, bits: float) -> None:
    assert config.bits_per_element(D) == bits
    codes = config.build().encode(torch.randn(1, 1, 4, D))
    assert 8 * sum(t.numel() * t.element_size() for t in codes.values()) / (4 * D) == bits


def test_rotation_is_pluggable() -> None:
    calls: list[tuple[int, int]] = []

    def identity(dim: int, seed: int) -> MatrixRotation:
        calls.append((dim, seed))
        return MatrixRotation(torch.eye(dim))

    x = torch.randn(1, 1, 3, 16)
    quantizer = TurboQuantConfig(bits=4, rotation=identity).build()
    codes = quantizer.encode(x)
    assert calls and calls[0][0] == 16
    # without rotation the indices are the Lloyd–Max cells of the normalized coordinates themselves
    from polyquant.kvcache import coordinate_codebook
    from polyquant.packing import unpack

    expected = coordinate_codebook(4, 16).quantize(x / x.norm(dim=-1, keepdim=True))
    assert torch.equal(unpack(codes["idx"], 4, 16), expected)

    with pytest.raises(FormatError, match="must return a Rotation of dim 16"):
        TurboQuantConfig(rotation=lambda dim, seed: random_orthogonal(dim + 1)).build().encode(x)  # type: ignore[arg-type, return-value]


def test_random_orthogonal_is_orthogonal_and_seeded() -> None:
    p = random_orthogonal(32, seed=1).matrix
    torch.testing.assert_close(p @ p.T, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.equal(p, random_orthogonal(32, seed=1).matrix)
    assert not torch.equal(p, random_orthogonal(32, seed=2).matrix)
    with pytest.raises(FormatError, match="not orthogonal"):
        MatrixRotation(torch.ones(3, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 5}, r"bits must be an integer in 1..4 for variant='mse'"),
        ({"bits": 6, "variant": "prod"}, r"1..5 for variant='prod'"),
        ({"variant": "fast"}, "variant must be 'mse' or 'prod'"),
        ({"outlier_channels": 8, "outlier_fraction": 0.25}, "not both"),
        ({"outlier_fraction": 1.5}, r"outlier_fraction must be in \[0, 1\)"),
        ({"codebook": "uniform"}, "codebook must be 'gaussian' or 'beta'"),
        ({"norm_dtype": torch.int8}, "norm_dtype must be float16"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        TurboQuantConfig(**kwargs)  # type: ignore[arg-type]


def test_shape_errors() -> None:
    quantizer = TurboQuantConfig(bits=2).build()
    with pytest.raises(FormatError, match=r"decode\(\) before encode\(\)"):
        quantizer.decode({})
    with pytest.raises(FormatError, match=r"shape \(batch, heads, tokens, head_dim\)"):
        quantizer.encode(torch.randn(4, D))
    quantizer.encode(torch.randn(1, 2, 3, D))
    with pytest.raises(FormatError, match="one quantizer"):
        quantizer.encode(torch.randn(1, 4, 3, D))
    with pytest.raises(FormatError, match="leave none"):
        TurboQuantConfig(outlier_channels=D).build().encode(torch.randn(1, 1, 1, D))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_fast_hadamard_rotation_gives_the_same_distortion(unit_vectors: torch.Tensor, bits: int) -> None:
    from polyquant.kvcache import hadamard_rotation

    quantizer = TurboQuantConfig(bits=bits, rotation=hadamard_rotation).build()
    rec = quantizer.decode(quantizer.encode(unit_vectors))
    d_mse = float(((unit_vectors - rec) ** 2).sum(-1).mean())
    assert d_mse == pytest.approx(D_MSE[bits], rel=0.05)


def test_hadamard_rotation_refuses_unknown_orders() -> None:
    from polyquant.kvcache import hadamard_rotation

    with pytest.raises(FormatError, match="no Hadamard matrix of order 94"):
        hadamard_rotation(94)
