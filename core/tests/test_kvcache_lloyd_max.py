"""Lloyd–Max codebooks against the reference levels and MSEs (algorithms.md §3.1, check 1)."""

from __future__ import annotations

import math

import pytest
import torch

from polyquant.errors import FormatError
from polyquant.kvcache import coordinate_codebook, gaussian_codebook, sphere_codebook

# Positive Gaussian Lloyd–Max levels (the codebooks are symmetric), as quoted in the reference (×√d).
GAUSSIAN_LEVELS = {
    1: (0.7979,),
    2: (0.4528, 1.5104),
    3: (0.2451, 0.7560, 1.3439, 2.1519),
    4: (0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326),
}
GAUSSIAN_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}
# d·MSE of the exact sphere-coordinate codebooks at d = 128 = the reference's D_mse on unit vectors.
SPHERE_D_MSE_128 = {1: 0.360, 2: 0.116, 3: 0.034, 4: 0.0093}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_levels_match_the_reference(bits: int) -> None:
    cb = gaussian_codebook(bits)
    levels = torch.tensor(cb.levels, dtype=torch.float64)
    assert levels.shape == (1 << bits,)
    assert torch.all(levels[1:] > levels[:-1])
    torch.testing.assert_close(levels, -levels.flip(0), atol=1e-9, rtol=0)  # symmetric
    expected = torch.tensor(GAUSSIAN_LEVELS[bits], dtype=torch.float64)
    torch.testing.assert_close(levels[1 << (bits - 1) :], expected, atol=1e-4, rtol=0)
    thresholds = torch.tensor(cb.thresholds, dtype=torch.float64)
    torch.testing.assert_close(thresholds, (levels[1:] + levels[:-1]) / 2)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_mse(bits: int) -> None:
    assert gaussian_codebook(bits).mse == pytest.approx(GAUSSIAN_MSE[bits], abs=1e-4)
    if bits == 1:
        assert gaussian_codebook(1).mse == pytest.approx(1 - 2 / math.pi, abs=1e-10)
        assert gaussian_codebook(1).levels[1] == pytest.approx(math.sqrt(2 / math.pi), abs=1e-10)


def test_gaussian_mse_matches_sampling() -> None:
    x = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    for bits in (1, 3):
        cb = gaussian_codebook(bits)
        empirical = float(((cb.dequantize(cb.quantize(x)) - x) ** 2).mean())
        assert empirical == pytest.approx(cb.mse, rel=0.02)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_sphere_codebook_at_128_is_close_to_gaussian(bits: int) -> None:
    exact = torch.tensor(sphere_codebook(bits, 128).levels, dtype=torch.float64) * math.sqrt(128)
    gauss = torch.tensor(gaussian_codebook(bits).levels, dtype=torch.float64)
    assert float((exact / gauss - 1).abs().max()) < 0.02  # "exact Beta levels at d=128 differ <2%"
    assert 128 * sphere_codebook(bits, 128).mse == pytest.approx(SPHERE_D_MSE_128[bits], rel=0.01)


def test_sphere_codebook_in_three_dimensions_is_uniform() -> None:
    # In R³ one coordinate of a random unit vector is uniform on [-1, 1] (Archimedes): uniform quantizer.
    torch.testing.assert_close(
        torch.tensor(sphere_codebook(2, 3).levels, dtype=torch.float64),
        torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )


def test_coordinate_codebook_scales_the_gaussian() -> None:
    cb = coordinate_codebook(2, 64)
    assert cb.levels[-1] == pytest.approx(1.5104 / 8, abs=1e-5)
    assert cb.mse * 64 == pytest.approx(GAUSSIAN_MSE[2], abs=1e-4)
    assert coordinate_codebook(2, 64, "beta") is sphere_codebook(2, 64)


def test_codebooks_are_cached() -> None:
    assert gaussian_codebook(3) is gaussian_codebook(3)
    assert sphere_codebook(3, 128) is sphere_codebook(3, 128)


def test_quantize_dequantize() -> None:
    cb = gaussian_codebook(2)
    idx = cb.quantize(torch.tensor([-9.0, -0.1, 0.1, 9.0]))
    assert idx.dtype == torch.uint8 and idx.tolist() == [0, 1, 2, 3]
    assert cb.dequantize(idx).tolist() == pytest.approx([-1.5104, -0.4528, 0.4528, 1.5104], abs=1e-4)


@pytest.mark.parametrize("bad", [0, 5, 2.0, True])
def test_bad_bits(bad: object) -> None:
    with pytest.raises(FormatError, match=r"bits must be an integer in 1\.\.4"):
        gaussian_codebook(bad)  # type: ignore[arg-type]


def test_bad_dimension_and_distribution() -> None:
    with pytest.raises(FormatError, match="dimension >= 3"):
        sphere_codebook(2, 2)
    with pytest.raises(FormatError, match="allowed: gaussian, beta"):
        coordinate_codebook(2, 128, "laplace")  # type: ignore[arg-type]
