"""The conformance suites pass correct contributions and catch broken ones.

The suites run in a child pytest process (torch does not survive pytester's in-process module cleanup),
once for the whole module; the JUnit XML report gives every test's outcome and message.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, skipped or error
    message: str


FORMATS = textwrap.dedent(
    """
    from dataclasses import dataclass

    import torch
    from polyquant.formats import FormatSpec, Granularity
    from polyquant.plugins import hookimpl
    from polyquant_testkit import FormatContract


    @dataclass(frozen=True)
    class TruncatingInt4:
        '''int4 that truncates toward zero instead of rounding: a classic bug.'''

        name: str = "int4_trunc"
        bits: int = 4
        kind: str = "int"
        max_value: float = 7.0

        def encode(self, x):
            return (torch.trunc(x.float()).clamp(-8, 7).to(torch.int8).to(torch.uint8) & 0x0F)

        def decode(self, codes):
            signed = codes.to(torch.int16)
            return torch.where(signed >= 8, signed - 16, signed).float()

        def round(self, x):
            return self.decode(self.encode(x))

        def to_dict(self):
            return {"type": "trunc", "name": self.name}


    class TruncPlugin:
        @hookimpl
        def polyquant_register_formats(self):
            return [FormatSpec("int4_trunc", TruncatingInt4(), Granularity.per_group(32), description="buggy")]


    class TestGoodInt4(FormatContract):
        format_name = "int4"
        max_relative_error = 0.13


    class TestTruncatingFormat(FormatContract):
        plugin = TruncPlugin()
        plugin_name = "trunc"
        format_name = "int4_trunc"
        max_relative_error = 0.13  # what int4 achieves; truncation doubles the error
    """
)

KERNELS = textwrap.dedent(
    """
    import torch
    from polyquant.kernels import linear_reference
    from polyquant.plugins import KernelSpec, hookimpl
    from polyquant_testkit import KernelContract


    def off_by_a_bit(x, weight, bias=None, **kwargs):
        return linear_reference(x, weight, bias, **kwargs) * 1.001


    class KernelPlugin:
        @hookimpl
        def polyquant_register_kernels(self):
            return [
                KernelSpec("linear", "sloppy", ("int4",), "cpu", "torch", off_by_a_bit, priority=5, description="bug"),
                KernelSpec(
                    "linear", "npu", ("int4",), "cpu", "npu", linear_reference, priority=5,
                    available=lambda: "needs an NPU", description="unavailable here",
                ),
            ]


    class TestReference(KernelContract):
        kernel_name = "reference"
        format_name = "int4"
        tolerance = 0.0


    class TestSloppy(KernelContract):
        plugin = KernelPlugin()
        plugin_name = "kernels"
        kernel_name = "sloppy"
        format_name = "int4"
        tolerance = 1e-4


    class TestUnavailable(KernelContract):
        plugin = KernelPlugin()
        plugin_name = "kernels"
        kernel_name = "npu"
        format_name = "int4"
    """
)

QUANTIZERS = textwrap.dedent(
    """
    import torch
    from polyquant.plugins import QuantizerInfo, hookimpl
    from polyquant_testkit import QuantizerContract


    class Noisy:
        '''Adds unseeded noise to the weight, in place: wrong three ways.'''

        name = "noisy"
        needs_calibration = False

        def quantize_weight(self, weight, spec, *, stats=None):
            weight.add_(torch.randn_like(weight) * weight.std())
            return spec.quantize(weight)


    class NoisyPlugin:
        @hookimpl
        def polyquant_register_quantizers(self):
            return [QuantizerInfo("noisy", Noisy, "buggy")]


    class TestMSE(QuantizerContract):
        quantizer_name = "mse"
        format_name = "int4"
        group_size = 64
        slack = 0.0


    class TestNoisy(QuantizerContract):
        plugin = NoisyPlugin()
        plugin_name = "noisy"
        quantizer_name = "noisy"
        format_name = "int4"
        group_size = 64
    """
)

ADAPTERS = textwrap.dedent(
    """
    import torch
    from polyquant.plugins import AdapterInfo, hookimpl
    from polyquant_testkit import AdapterContract


    class Careless:
        name = "careless"

        def matches(self, model):
            return True

        def blocks(self, model):
            return [("0", torch.nn.Linear(4, 4))]  # not the model's module

        def default_exclude(self, model):
            return ["lm_head"]  # this model has none


    class CarelessPlugin:
        @hookimpl
        def polyquant_register_adapters(self):
            return [AdapterInfo("careless", Careless, priority=0)]


    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))


    class TestCareless(AdapterContract):
        plugin = CarelessPlugin()
        plugin_name = "careless"
        adapter_name = "careless"
        model_factory = staticmethod(mlp)


    class TestGeneric(AdapterContract):
        adapter_name = "generic"
        default_exclude_empty = True
        model_factory = staticmethod(mlp)
    """
)

BROKEN = textwrap.dedent(
    """
    from polyquant.plugins import hookimpl
    from polyquant_testkit import FormatContract


    class Broken:
        @hookimpl
        def polyquant_register_formats(self):
            raise ValueError("cannot build formats")


    class TestBroken(FormatContract):
        plugin = Broken()
        format_name = "whatever"
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """``"Class::test"`` → outcome, for every test of the suites above run in a child pytest."""
    root = tmp_path_factory.mktemp("suites")
    for name, source in {
        "formats": FORMATS,
        "kernels": KERNELS,
        "quantizers": QUANTIZERS,
        "adapters": ADAPTERS,
        "broken": BROKEN,
    }.items():
        (root / f"test_{name}_suite.py").write_text(source)
    report = root / "report.xml"
    command = [sys.executable, "-m", "pytest", str(root), "-q", "-p", "no:cacheprovider", "--rootdir", str(root)]
    subprocess.run(
        [*command, f"--junitxml={report}"], cwd=root, capture_output=True, text=True, timeout=600, check=False
    )
    results: dict[str, Outcome] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed"}.get(tag, tag)
                message = f"{node.get('message', '')}\n{node.text or ''}"
                break
        results[key] = Outcome(status, message)
    assert results, f"the child pytest produced no results ({report})"
    return results


def _of(outcomes: dict[str, Outcome], cls: str) -> dict[str, Outcome]:
    return {key.split("::", 1)[1]: value for key, value in outcomes.items() if key.startswith(f"{cls}::")}


def _status(outcomes: dict[str, Outcome], cls: str, status: str) -> set[str]:
    return {name.split("[")[0] for name, o in _of(outcomes, cls).items() if o.status == status}


def test_format_contract_passes_a_correct_format(outcomes: dict[str, Outcome]) -> None:
    good = _of(outcomes, "TestGoodInt4")
    assert len(good) >= 12
    assert all(o.status == "passed" for o in good.values()), {
        k: o.message for k, o in good.items() if o.status != "passed"
    }


def test_format_contract_catches_truncation(outcomes: dict[str, Outcome]) -> None:
    assert _status(outcomes, "TestTruncatingFormat", "failed") == {
        "test_encode_picks_the_nearest_level",
        "test_relative_error_within_bound",
    }
    message = _of(outcomes, "TestTruncatingFormat")["test_encode_picks_the_nearest_level"].message
    assert "int4_trunc:" in message and "but a level at distance" in message


def test_kernel_contract(outcomes: dict[str, Outcome]) -> None:
    assert _status(outcomes, "TestReference", "passed") == {
        "test_kernel_is_registered",
        "test_availability_is_reported",
        "test_matches_reference",
        "test_selected_when_forced",
        "test_explain_lists_the_kernel",
    }
    assert _status(outcomes, "TestSloppy", "failed") == {"test_matches_reference"}
    sloppy = _of(outcomes, "TestSloppy")["test_matches_reference"].message
    assert "exceeds tolerance 0.0001" in sloppy
    assert _status(outcomes, "TestUnavailable", "skipped") == {
        "test_availability_is_reported",
        "test_matches_reference",
        "test_selected_when_forced",
    }
    assert (
        "linear/npu is unavailable here: needs an NPU"
        in _of(outcomes, "TestUnavailable")["test_matches_reference"].message
    )


def test_quantizer_contract(outcomes: dict[str, Outcome]) -> None:
    assert _status(outcomes, "TestMSE", "failed") == set()
    assert len(_status(outcomes, "TestMSE", "passed")) == 5
    assert _status(outcomes, "TestNoisy", "failed") == {
        "test_error_not_worse_than_rtn",
        "test_is_deterministic",
        "test_leaves_the_weight_untouched",
    }
    assert (
        "noisy modified the weight it was given"
        in _of(outcomes, "TestNoisy")["test_leaves_the_weight_untouched"].message
    )


def test_adapter_contract(outcomes: dict[str, Outcome]) -> None:
    assert _status(outcomes, "TestGeneric", "failed") == set()
    assert _status(outcomes, "TestCareless", "failed") == {
        "test_blocks_are_submodules_in_order",
        "test_default_exclude_patterns_match_modules",
    }
    assert (
        "pattern 'lm_head' matches no module"
        in _of(outcomes, "TestCareless")["test_default_exclude_patterns_match_modules"].message
    )


def test_a_plugin_that_fails_to_load_errors_every_test(outcomes: dict[str, Outcome]) -> None:
    broken = _of(outcomes, "TestBroken")
    assert len(broken) >= 12 and all(o.status == "error" for o in broken.values())
    message = next(iter(broken.values())).message
    assert "plugin 'Broken' has status 'failed', expected 'loaded'" in message and "cannot build formats" in message
