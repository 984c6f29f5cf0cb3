"""``polyquant example ...`` and the standalone ``polyquant-example`` script."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

import polyquant_example.plugin as plugin
from polyquant.cli.main import cli
from polyquant_example.cli import main


@pytest.fixture
def example_plugin(plugin_manager, registered):
    with registered(plugin, "example") as info:
        yield info


def test_show_lists_every_code(example_plugin) -> None:
    result = CliRunner().invoke(cli, ["example", "show"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"│\s*(\d+)\s*│\s*([01]{4})\s*│\s*([+-])\s*│\s*(\d)\s*│\s*([+-]\d) · step", result.stdout)
    assert len(rows) == 16
    for code, bits, sign, magnitude, value in rows:
        assert int(bits, 2) == int(code)
        assert int(magnitude) == int(code) & 7 and (sign == "-") == (int(code) >= 8)
        assert abs(int(value)) == int(magnitude)
    assert "15 distinct levels -7..7" in result.stdout


def test_roundtrip_compares_formats(example_plugin) -> None:
    result = CliRunner().invoke(cli, ["example", "roundtrip", "--rows", "32", "--cols", "256"])
    assert result.exit_code == 0, result.output
    errors = {
        label: float(err)
        for label, err in re.findall(r"│ (\S+ \((?:rtn|mse)\))\s*│.*?│\s*[\d.]+\s*│\s*([\d.]+)%", result.stdout)
    }
    assert set(errors) == {"int4_pow2 (rtn)", "int4_pow2 (mse)", "int4 (rtn)", "mxfp4 (rtn)"}
    assert errors["int4_pow2 (mse)"] <= errors["int4_pow2 (rtn)"]  # the clipping search only helps
    assert errors["int4 (rtn)"] < errors["int4_pow2 (rtn)"]  # float scales are finer than powers of two


def test_roundtrip_rejects_bad_shapes(example_plugin) -> None:
    result = CliRunner().invoke(cli, ["example", "roundtrip", "--cols", "100"])
    assert result.exit_code == 1 and "not divisible by group size 32" in result.stderr


def test_standalone_script(example_plugin) -> None:
    result = CliRunner().invoke(main, ["show"])
    assert result.exit_code == 0 and "int4_pow2 codes" in result.stdout
    assert main.name == "polyquant-example"


def test_polyquant_kernels_explains_the_choice(example_plugin) -> None:
    result = CliRunner().invoke(cli, ["kernels", "--explain", "linear", "--format", "int4_pow2", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "selected: cpu_int4_pow2" in result.stdout
    assert re.search(r"reference\s*│\s*reference\s*│\s*-100\s*│ lower priority than cpu_int4_pow2", result.stdout)
