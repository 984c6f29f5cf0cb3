"""``FormatContract``: the conformance suite every tensor format must pass.

Example (in a test module of a plugin)::

    from polyquant_testkit import FormatContract
    import my_plugin

    class TestInt4Pow2(FormatContract):
        plugin = my_plugin
        format_name = "int4_pow2"
        max_relative_error = 0.16
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, ClassVar

import pytest
import torch

from polyquant.errors import FormatError
from polyquant_testkit.contracts.base import PluginContract

if TYPE_CHECKING:
    from polyquant.formats import FormatSpec

__all__ = ["FormatContract"]


class FormatContract(PluginContract):
    """Checks a registered :class:`~polyquant.formats.FormatSpec` end to end.

    Attributes:
        format_name: the registry name of the format under test (required).
        weight_shape: shape of the random test weight; must suit the format's granularity.
        max_relative_error: bound on ``‖W − dequant(quant(W))‖ / ‖W‖`` for ``W ~ N(0, 1)``. The default is
            a loose sanity bound (``min(1, 2**(4 − bits))``); set what the format should really achieve.
        seed: seed of the random test weights.

    Tests: registry lookup, element round trip on every code, encoding to the nearest level,
    quantize/dequantize shapes and dtypes, the error bound, exact storage accounting, serialization
    round trip, determinism and the rejection of NaN input.
    """

    format_name: ClassVar[str]
    weight_shape: ClassVar[tuple[int, ...]] = (128, 256)
    seed: ClassVar[int] = 0

    @property
    def max_relative_error(self) -> float:
        """Bound on the relative Frobenius error of a quantized ``N(0, 1)`` weight."""
        return min(1.0, 2.0 ** (4 - self.spec.bits))

    # ------------------------------------------------------------------ helpers
    @property
    def spec(self) -> FormatSpec:
        """The format under test, from the current registry."""
        import polyquant.formats

        return polyquant.formats.get(self.format_name)

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A seeded ``N(0, 1)`` weight of :attr:`weight_shape`."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.weight_shape, generator=generator).to(dtype)

    def _element_levels(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every valid code of the element, and (codebooks only) one row of levels to decode them with.

        A code is valid when it decodes (ternary uses 3 of its 4 two-bit patterns, for instance).
        """
        spec = self.spec
        levels = None
        if spec.is_codebook:
            qp_levels = spec.compute_qparams(self.weight()).levels
            assert qp_levels is not None
            levels = qp_levels.reshape(-1, 1 << spec.bits)[:1]
        valid = []
        for code in range(1 << spec.bits):
            try:
                self._decode(torch.tensor([code], dtype=torch.uint8), levels)
            except FormatError:
                continue
            valid.append(code)
        return torch.tensor(valid, dtype=torch.uint8), levels

    def _decode(self, codes: torch.Tensor, levels: torch.Tensor | None) -> torch.Tensor:
        if levels is None:
            return self.spec.decode(codes)
        return self.spec.element.decode(codes.reshape(1, -1), levels).reshape(-1)  # type: ignore[call-arg]

    def _encode(self, values: torch.Tensor, levels: torch.Tensor | None) -> torch.Tensor:
        if levels is None:
            return self.spec.encode(values)
        return self.spec.element.encode(values.reshape(1, -1), levels).reshape(-1)  # type: ignore[call-arg]

    # ------------------------------------------------------------------ tests
    def test_format_is_registered(self) -> None:
        """The format is registered under its name, with 1..8 bits and a description."""
        import polyquant.formats

        spec = self.spec
        assert spec.name == self.format_name
        assert self.format_name in polyquant.formats.available()
        assert 1 <= spec.bits <= 8, f"{self.format_name}: bits must be 1..8, got {spec.bits}"
        assert spec.description, f"{self.format_name}: give the format a one-line description for `polyquant formats`"

    def test_every_code_round_trips(self) -> None:
        """Every valid code decodes to a value that encodes back to it (and to the same code when unique)."""
        codes, levels = self._element_levels()
        values = self._decode(codes, levels)
        assert values.dtype == torch.float32 and values.shape == codes.shape
        finite = torch.isfinite(values)
        assert bool(finite.any()), f"{self.format_name}: no code decodes to a finite value"
        again = self._decode(self._encode(values[finite], levels), levels)
        torch.testing.assert_close(
            again, values[finite], rtol=0, atol=0, msg=f"{self.format_name}: decode(encode(v)) != v"
        )
        finite_values = values[finite].tolist()
        for code, value in zip(codes[finite].tolist(), finite_values, strict=True):
            if finite_values.count(value) == 1:  # codes of a unique value must come back unchanged
                got = int(self._encode(torch.tensor([value]), levels)[0])
                assert got == code, f"{self.format_name}: value {value} (code {code}) re-encodes to code {got}"

    def test_encode_picks_the_nearest_level(self) -> None:
        """Encoding rounds to the nearest representable level (saturating outside the range)."""
        codes, levels = self._element_levels()
        values = self._decode(codes, levels)
        grid = values[torch.isfinite(values)].unique()
        span = float(grid.abs().max()) * 1.25 or 1.0
        generator = torch.Generator().manual_seed(self.seed)
        x = (torch.rand(4096, generator=generator) * 2 - 1) * span
        rounded = self._decode(self._encode(x, levels), levels)
        best = (x[:, None] - grid[None, :]).abs().amin(dim=1)
        excess = (x - rounded).abs() - best
        worst = int(excess.argmax())
        assert float(excess.max()) <= 1e-6 * span, (
            f"{self.format_name}: {float(x[worst])} encodes to {float(rounded[worst])}, but a level at distance "
            f"{float(best[worst])} exists"
        )

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
    def test_quantize_keeps_shape_and_dtype(self, dtype: torch.dtype) -> None:
        """Quantizing keeps the logical shape; dequantizing restores the input dtype (or the one asked for)."""
        w = self.weight(dtype)
        qt = self.spec.quantize(w)
        assert tuple(qt.shape) == tuple(w.shape)
        assert qt.spec.name == self.format_name
        dense = qt.dequantize()
        assert dense.shape == w.shape and dense.dtype == dtype
        assert qt.dequantize(torch.float32).dtype == torch.float32
        assert bool(torch.isfinite(dense).all()), f"{self.format_name}: dequantized values are not finite"

    def test_relative_error_within_bound(self) -> None:
        """The relative error on ``N(0, 1)`` weights stays within :attr:`max_relative_error`."""
        w = self.weight()
        error = float((self.spec.quantize(w).dequantize() - w).norm() / w.norm())
        assert error <= self.max_relative_error, (
            f"{self.format_name}: relative error {error:.4f} exceeds max_relative_error {self.max_relative_error:.4f}"
        )

    def test_fake_quantize_matches_quantize(self) -> None:
        """``fake_quantize`` equals ``quantize(...).dequantize()`` bit for bit."""
        w = self.weight()
        torch.testing.assert_close(self.spec.fake_quantize(w), self.spec.quantize(w).dequantize(), rtol=0, atol=0)

    def test_bits_per_weight_is_the_storage(self) -> None:
        """``bits_per_weight`` (spec and tensor) equals the bytes actually stored."""
        spec, w = self.spec, self.weight()
        qt = spec.quantize(w)
        stored_bits = 8 * sum(t.numel() * t.element_size() for t in qt.tensors().values())
        assert math.isclose(qt.bits_per_weight, stored_bits / w.numel())
        assert math.isclose(qt.bits_per_weight, 8 * qt.nbytes / qt.numel)
        assert math.isclose(spec.bits_per_weight(tuple(w.shape)), qt.bits_per_weight), (
            f"{self.format_name}: spec.bits_per_weight advertises {spec.bits_per_weight(tuple(w.shape))}, "
            f"but a quantized tensor stores {qt.bits_per_weight} bits per weight"
        )
        assert qt.bits_per_weight >= spec.bits * (1 - 1e-9), "codes cannot take fewer bits than the element width"

    def test_dict_round_trip(self) -> None:
        """``to_dict`` is JSON-ready and ``FormatSpec.from_dict`` rebuilds an equal, equivalent spec."""
        from polyquant.formats import FormatSpec

        data = self.spec.to_dict()
        assert json.loads(json.dumps(data)) == data, "to_dict() must be JSON-serializable"
        rebuilt = FormatSpec.from_dict(json.loads(json.dumps(data)))
        assert rebuilt == self.spec
        w = self.weight()
        torch.testing.assert_close(rebuilt.fake_quantize(w), self.spec.fake_quantize(w), rtol=0, atol=0)

    def test_quantized_tensor_round_trips_through_storage(self) -> None:
        """A QTensor rebuilt from its tensors and JSON metadata dequantizes identically."""
        from polyquant.qtensor import QTensor

        qt = self.spec.quantize(self.weight())
        metadata = json.loads(json.dumps(qt.metadata()))
        rebuilt = QTensor.from_tensors({k: v.clone() for k, v in qt.tensors().items()}, metadata)
        torch.testing.assert_close(rebuilt.dequantize(), qt.dequantize(), rtol=0, atol=0)

    def test_quantize_is_deterministic(self) -> None:
        """Quantizing the same tensor twice stores identical tensors."""
        first, second = self.spec.quantize(self.weight()), self.spec.quantize(self.weight())
        assert first.tensors().keys() == second.tensors().keys()
        for key, tensor in first.tensors().items():
            assert torch.equal(tensor, second.tensors()[key]), f"{self.format_name}: {key} differs between runs"

    def test_nan_input_raises_format_error(self) -> None:
        """A NaN in the input raises :class:`~polyquant.errors.FormatError`."""
        w = self.weight()
        w[0, 0] = float("nan")
        with pytest.raises(FormatError):
            self.spec.quantize(w)
