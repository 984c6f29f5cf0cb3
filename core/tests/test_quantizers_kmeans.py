"""k-means codebooks (SqueezeLLM): error versus RTN and uniform k-means, exact packing, guards, registry, end to end."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import polyquant
import polyquant.formats as formats
from polyquant.errors import CalibrationError, RecipeError
from polyquant.formats.elements import CodebookElement
from polyquant.formats.layout import GroupLayout
from polyquant.formats.spec import FormatSpec
from polyquant.quantizers import KMeansQuantizer, QuantizationFallbackWarning, builtin_quantizers, make_quantizer
from polyquant.quantizers.kmeans import weighted_kmeans
from polyquant.quantizers.stats import InputStats
from polyquant_testkit import QuantizerContract

CB3 = formats.get("codebook3").with_options(group_size=0)  # one codebook per output row, as SqueezeLLM


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight(kind: str, seed: int = 0, shape: tuple[int, int] = (128, 256)) -> torch.Tensor:
    if kind == "gaussian":
        return 0.02 * torch.randn(shape, generator=_gen(seed))
    # Student-t with 3 degrees of freedom: a normal over the root of a scaled chi-square (heavy tails)
    normal = torch.randn(shape, generator=_gen(seed))
    chi2 = (torch.randn((*shape, 3), generator=_gen(seed + 100)) ** 2).sum(-1)
    return 0.02 * normal / (chi2 / 3).sqrt()


def _err(w: torch.Tensor, q: torch.Tensor, s: torch.Tensor | None = None) -> float:
    e = (w - q) ** 2
    return float((e if s is None else e * s).sum())


def _codebook(bits: int) -> FormatSpec:
    return FormatSpec(f"codebook{bits}", CodebookElement(bits), scale_method="none").with_options(group_size=0)


def _correlated_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """X ~ N(0, AAᵀ + 0.05 I), 4096 × d_in 256 with 4 channels ×20; W ~ N(0, 0.02²), d_out 128 (as GPTQ's check)."""
    g = _gen(seed)
    d_in, d_out = 256, 128
    a = torch.randn(d_in, d_in, generator=g) / d_in**0.5
    chol = torch.linalg.cholesky(a @ a.T + 0.05 * torch.eye(d_in))
    x = torch.randn(4096, d_in, generator=g) @ chol.T
    x[:, :4] *= 20
    w = 0.02 * torch.randn(d_out, d_in, generator=g)
    return x, w


def _stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    stats = InputStats()
    for chunk in x.split(512):
        stats.add(chunk)
    return stats.as_dict()


# ------------------------------------------------------------------------------------------- quality
@pytest.mark.parametrize(("kind", "bound"), [("gaussian", 0.6), ("student-t", 0.2)])
def test_lowers_the_error_of_the_quantile_init(kind: str, bound: float) -> None:
    w = _weight(kind)
    rtn = CB3.quantize(w).dequantize()
    km = KMeansQuantizer().quantize_weight(w, CB3).dequantize()
    assert _err(w, km) / _err(w, rtn) < bound  # measured 0.52 (gaussian), 0.14 (student-t)
    s = torch.exp(torch.randn(256, generator=_gen(5)))  # per-column sensitivities
    weighted = KMeansQuantizer().quantize_weight(w, CB3, stats={"hessian": torch.diag(s)}).dequantize()
    assert _err(w, weighted, s) / _err(w, rtn, s) < bound  # measured 0.47, 0.11
    assert _err(w, weighted, s) < 0.92 * _err(w, km, s)  # the weighting pays off: measured 0.87, 0.82


def test_concentrated_sensitivity_protects_those_columns() -> None:
    w = _weight("gaussian", seed=1)
    s = torch.full((256,), 0.1)
    s[:8] = 100.0
    uniform = KMeansQuantizer().quantize_weight(w, CB3).dequantize()
    weighted = KMeansQuantizer(sensitivity="hessian").quantize_weight(w, CB3, stats={"hessian": torch.diag(s)})
    deq = weighted.dequantize()
    hot = float(((w - deq)[:, :8] ** 2).mean()) / float(((w - uniform)[:, :8] ** 2).mean())
    assert hot < 0.05  # measured 0.011: 8 levels for 8 sensitive values per row
    assert _err(w, deq, s) < 0.15 * _err(w, uniform, s)  # measured 0.073


def test_hessian_sensitivity_beats_uniform_kmeans_and_int3_on_output_error() -> None:
    x, w = _correlated_case()
    stats = _stats(x)

    def output_mse(q: torch.Tensor) -> float:
        return float(((x @ (w - q).T) ** 2).mean())

    hessian = output_mse(KMeansQuantizer(sensitivity="hessian").quantize_weight(w, CB3, stats=stats).dequantize())
    uniform = output_mse(KMeansQuantizer(sensitivity="uniform").quantize_weight(w, CB3, stats=stats).dequantize())
    absmean = output_mse(KMeansQuantizer(sensitivity="absmean").quantize_weight(w, CB3, stats=stats).dequantize())
    int3 = output_mse(formats.get("int3").with_options(group_size=0).quantize(w).dequantize())
    codebook_rtn = output_mse(CB3.quantize(w).dequantize())
    assert hessian < 0.3 * uniform  # measured 0.17 (output MSE 4.0e-3 against 2.3e-2)
    assert hessian < 0.15 * int3  # measured 0.056 (int3 per channel, absmax: 7.1e-2)
    assert hessian < 0.15 * codebook_rtn  # measured 0.086 (the codebook's quantile levels: 4.7e-2)
    assert uniform < 0.5 * int3  # measured 0.33
    assert absmean < 0.3 * uniform  # input_absmean² as the proxy: measured 0.17


def _optimal_cost(x: torch.Tensor, size: int) -> torch.Tensor:
    """Exact 1-D k-means cost per row by dynamic programming over the sorted values (small inputs only)."""
    xs = x.double().sort(dim=1).values
    groups, n = xs.shape
    zero = torch.zeros(groups, 1, dtype=torch.float64)
    c1 = torch.cat([zero, xs.cumsum(1)], 1)
    c2 = torch.cat([zero, (xs * xs).cumsum(1)], 1)
    count = torch.arange(n + 1, dtype=torch.float64)
    span = (count[None, :] - count[:, None]).clamp(min=1)
    s1 = c1[:, None, :] - c1[:, :, None]
    cost = (c2[:, None, :] - c2[:, :, None]) - s1**2 / span  # cost[j, i]: one cluster over xs[j:i]
    cost = cost.masked_fill(count[:, None] >= count[None, :], float("inf"))
    best = cost[:, 0, :]
    for _ in range(1, size):
        best = torch.minimum(best, (best[:, :, None] + cost).min(dim=1).values)
    return best[:, n]


def test_weighted_kmeans_is_close_to_the_optimum() -> None:
    x = torch.randn(16, 96, generator=_gen(3))
    for size in (2, 4, 8):
        levels = weighted_kmeans(x, None, size)
        index = torch.searchsorted(((levels[:, 1:] + levels[:, :-1]) / 2).contiguous(), x)
        cost = ((x - levels.gather(1, index)).double() ** 2).sum(1)
        ratio = float(cost.sum() / _optimal_cost(x, size).sum())
        assert 1 - 1e-6 <= ratio < 1.05, (size, ratio)  # measured 1.000, 1.002, 1.016


# ------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "spec",
    [
        CB3,
        formats.get("codebook4").with_options(group_size=64),
        formats.get("codebook2"),  # one codebook per tensor
        formats.get("codebook3").with_options(group_size=0, scale_dtype="fp16"),
        formats.get("codebook4").with_options(group_size=32, scale_dtype="bf16"),
    ],
    ids=lambda s: f"{s.name}-{s.granularity}-{s.scale_dtype}",
)
def test_levels_are_sorted_and_pack_exactly(spec: FormatSpec) -> None:
    w = _weight("student-t", seed=2, shape=(32, 128))
    quantizer = KMeansQuantizer()
    qparams = quantizer.compute_qparams(w, spec)
    qt = quantizer.quantize_weight(w, spec)
    assert qparams.levels is not None and qt.levels is not None
    assert torch.equal(qt.levels.float(), qparams.levels)  # already rounded to the storage type
    assert bool(torch.isfinite(qparams.levels).all())
    assert bool((qparams.levels.diff(dim=-1) >= 0).all())
    deq = qt.dequantize()
    assert torch.equal(deq, spec.fake_quantize(w, qparams=qparams))
    layout = GroupLayout.of(spec.granularity, tuple(w.shape))
    table = qparams.levels.reshape(layout.num_groups, -1)
    assert bool((layout.rows(deq).unsqueeze(-1) == table.unsqueeze(1)).any(-1).all())  # only its own levels
    assert _err(w, deq) <= _err(w, spec.quantize(w).dequantize())


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_bit_widths(bits: int) -> None:
    w = _weight("gaussian", seed=4, shape=(64, 128))
    spec = _codebook(bits)
    qt = KMeansQuantizer().quantize_weight(w, spec)
    assert qt.levels is not None and tuple(qt.levels.shape) == (64, 1, 2**bits)
    assert _err(w, qt.dequantize()) < _err(w, spec.quantize(w).dequantize())  # measured 0.94, 0.73, 0.46, 0.23


def test_more_bits_less_error() -> None:
    w = _weight("gaussian", seed=4, shape=(64, 128))
    errors = [_err(w, KMeansQuantizer().quantize_weight(w, _codebook(b)).dequantize()) for b in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True)


def test_constant_rows_and_tiny_groups() -> None:
    w = _weight("gaussian", seed=6, shape=(8, 64))
    w[1] = 0.0
    w[3] = 3.0
    w[5] = -1e-3
    qt = KMeansQuantizer().quantize_weight(w, CB3)
    deq = qt.dequantize()
    assert qt.levels is not None and bool(torch.isfinite(qt.levels).all())
    assert bool(torch.isfinite(deq).all())
    for row in (1, 3, 5):
        assert torch.equal(deq[row], w[row])
    # groups of 8 elements with 16 levels: every element gets a level of its own
    tiny = formats.get("codebook4").with_options(group_size=8)
    assert torch.equal(KMeansQuantizer().quantize_weight(w, tiny).dequantize(), w)
    assert torch.equal(KMeansQuantizer(init="quantile").quantize_weight(w, tiny).dequantize(), w)


def test_half_precision_weights_and_the_input_is_untouched() -> None:
    w = _weight("gaussian", seed=7, shape=(16, 64)).to(torch.bfloat16)
    before = w.clone()
    qt = KMeansQuantizer().quantize_weight(w, CB3)
    assert qt.dtype == torch.bfloat16 and qt.dequantize().dtype == torch.bfloat16
    assert torch.equal(w, before)


# ------------------------------------------------------------------------------------------- options
def test_deterministic_for_a_seed_and_inits() -> None:
    w = _weight("student-t", seed=8, shape=(32, 128))
    first = KMeansQuantizer(seed=3).quantize_weight(w, CB3)
    second = KMeansQuantizer(seed=3).quantize_weight(w, CB3)
    for key, tensor in first.tensors().items():
        assert torch.equal(tensor, second.tensors()[key])
    rtn = _err(w, CB3.quantize(w).dequantize())
    for quantizer in (KMeansQuantizer(init="quantile"), KMeansQuantizer(restarts=3), KMeansQuantizer(iters=1)):
        assert _err(w, quantizer.quantize_weight(w, CB3).dequantize()) < rtn
    best_of_3 = _err(w, KMeansQuantizer(restarts=3).quantize_weight(w, CB3).dequantize())
    assert best_of_3 <= _err(w, first.dequantize()) * 1.001


def test_sensitivity_sources() -> None:
    w = _weight("gaussian", seed=9, shape=(16, 64))
    x = torch.randn(256, 64, generator=_gen(10)) * torch.linspace(0.1, 3.0, 64)
    stats = _stats(x)

    def levels(quantizer: KMeansQuantizer, st: dict[str, torch.Tensor] | None) -> torch.Tensor:
        qparams = quantizer.compute_qparams(w, CB3, stats=st)
        assert qparams.levels is not None
        return qparams.levels

    plain = levels(KMeansQuantizer(), None)
    assert torch.equal(levels(KMeansQuantizer(sensitivity="uniform"), stats), plain)  # stats ignored
    assert torch.equal(levels(KMeansQuantizer(), stats), levels(KMeansQuantizer(sensitivity="hessian"), stats))
    only_absmean = {"input_absmean": stats["input_absmean"]}
    assert torch.equal(levels(KMeansQuantizer(), only_absmean), levels(KMeansQuantizer(sensitivity="absmean"), stats))
    assert not torch.equal(levels(KMeansQuantizer(), stats), plain)
    with pytest.raises(CalibrationError, match="needs the layer's input statistics"):
        KMeansQuantizer(sensitivity="hessian").quantize_weight(w, CB3)
    with pytest.raises(CalibrationError, match=r"stats\['input_absmean'\], which is missing"):
        KMeansQuantizer(sensitivity="absmean").quantize_weight(w, CB3, stats={"hessian": stats["hessian"]})
    with pytest.raises(CalibrationError, match="another module"):
        KMeansQuantizer().quantize_weight(w, CB3, stats={"hessian": torch.eye(32)})
    with pytest.raises(CalibrationError, match="NaN"):
        KMeansQuantizer().quantize_weight(w, CB3, stats={"hessian": torch.full((64, 64), float("nan"))})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empty = levels(KMeansQuantizer(sensitivity="hessian"), {"hessian": torch.zeros(64, 64)})
    assert any(issubclass(c.category, QuantizationFallbackWarning) for c in caught)
    assert torch.equal(empty, plain)
    dead = torch.diag(torch.cat([torch.zeros(32), torch.ones(32)]))  # a whole group without sensitivity
    qt = KMeansQuantizer().quantize_weight(
        w, formats.get("codebook2").with_options(group_size=32), stats={"hessian": dead}
    )
    assert bool(torch.isfinite(qt.dequantize()).all())


def test_non_codebook_formats_and_bad_arguments_raise() -> None:
    w = torch.randn(8, 64)
    for name in ("int4", "nf4", "fp8_e4m3"):
        with pytest.raises(RecipeError, match=r"needs a codebook format \(codebook2, codebook3.*group_size: 0"):
            KMeansQuantizer().quantize_weight(w, formats.get(name))
    for kwargs, message in [
        ({"sensitivity": "fisher"}, "sensitivity: 'fisher' is invalid; allowed: auto, hessian, absmean, uniform"),
        ({"iters": 0}, "iters: 0 is invalid"),
        ({"iters": True}, "iters: True is invalid"),
        ({"tol": -1.0}, "tol: -1.0 is invalid"),
        ({"tol": float("nan")}, "tol: nan is invalid"),
        ({"init": "random"}, "init: 'random' is invalid; allowed: kmeans++, quantile"),
        ({"restarts": -1}, "restarts: -1 is invalid"),
        ({"seed": -1}, "seed: -1 is invalid"),
        ({"seed": 1.5}, "seed: 1.5 is invalid"),
    ]:
        with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("+", r"\+")):
            KMeansQuantizer(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(RecipeError, match="^method_args." + message.split(":")[0]):
            make_quantizer("kmeans", kwargs)
    with pytest.raises(RecipeError, match="accepted: sensitivity, iters, tol, init, restarts, seed"):
        make_quantizer("kmeans", {"bits": 3})


# ------------------------------------------------------------------------------------------- registry, e2e
def test_registered_and_makeable() -> None:
    infos = {info.name: info for info in builtin_quantizers()}
    assert "kmeans" in infos and not infos["kmeans"].needs_calibration
    assert "SqueezeLLM" in infos["kmeans"].description
    quantizer = make_quantizer("kmeans", {"sensitivity": "hessian", "iters": 10, "seed": 1})
    assert isinstance(quantizer, KMeansQuantizer)
    assert (quantizer.name, quantizer.iters, quantizer.seed, quantizer.needs_calibration) == ("kmeans", 10, 1, True)
    assert make_quantizer("kmeans").needs_calibration is False


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
    )


def test_end_to_end_beats_rtn_with_the_same_format() -> None:
    model = _model()
    probe = torch.randn(256, 128, generator=_gen(2))
    with torch.no_grad():
        reference = model(probe)
    errors = {}
    for label, method, args in [
        ("rtn", "rtn", {}),
        ("kmeans", "kmeans", {}),
        ("hessian", "kmeans", {"sensitivity": "hessian"}),
    ]:
        recipe = {"weights": {"format": "codebook3", "group_size": 0}, "method": method, "method_args": args}
        calibration = torch.randn(64, 128, generator=_gen(1))
        quantized, report = polyquant.quantize(copy.deepcopy(model), recipe, calibration=calibration, progress=False)
        assert [row.format for row in report.rows] == ["codebook3"] * 3
        with torch.no_grad():
            errors[label] = float(((quantized(probe) - reference) ** 2).mean() / (reference**2).mean())
    assert errors["kmeans"] < 0.85 * errors["rtn"]  # measured 0.69 (relative output MSE 0.021 against 0.030)
    assert errors["hessian"] < 0.85 * errors["rtn"]  # measured 0.67
    with pytest.raises(CalibrationError, match="needs calibration data"):
        polyquant.quantize(
            _model(),
            {
                "weights": {"format": "codebook3", "group_size": 0},
                "method": "kmeans",
                "method_args": {"sensitivity": "hessian"},
            },
            progress=False,
        )


class TestKMeansContract(QuantizerContract):
    quantizer_name = "kmeans"
    format_name = "codebook3"
    group_size = 0
    slack = 0.0  # per codebook, the learned levels are kept only when they do not lose to the quantile levels
