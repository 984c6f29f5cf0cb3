"""Shared fixtures of the cross-package tests: the fixture plugins and a runner for the real CLI.

The CLI runs in a subprocess (``python -m polyquant.cli``) so that plugins are discovered exactly as on a
user's machine: through ``importlib.metadata`` entry points of distributions on ``sys.path``. The fake
plugins under ``fixtures/plugins/<scenario>/`` are tiny distributions (a module plus a ``*.dist-info``
with ``entry_points.txt``) made visible by putting their directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PLUGIN_FIXTURES = FIXTURES / "plugins"
MODEL_FIXTURES = FIXTURES / "models"

RunCLI = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def plugin_fixture_dirs() -> dict[str, Path]:
    """Scenario name → directory holding one fake plugin distribution."""
    return {p.name: p for p in sorted(PLUGIN_FIXTURES.iterdir()) if p.is_dir() and not p.name.startswith("_")}


@pytest.fixture(scope="session")
def model_fixture_dir() -> Path:
    """Directory of ``pq_test_models`` (model factories for ``polyquant quantize``)."""
    return MODEL_FIXTURES


@pytest.fixture(scope="session")
def run_cli() -> RunCLI:
    """``run_cli(*args, pythonpath=(), env=None, cwd=None)`` → the finished ``polyquant`` subprocess.

    The child gets this environment without any ``POLYQUANT_*`` variable, plus ``env``; ``pythonpath``
    directories are put first on its ``PYTHONPATH``.
    """

    def run(
        *args: str,
        pythonpath: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYQUANT_")}
        paths = [str(p) for p in pythonpath]
        if environment.get("PYTHONPATH"):
            paths.append(environment["PYTHONPATH"])
        if paths:
            environment["PYTHONPATH"] = os.pathsep.join(paths)
        environment.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "polyquant.cli", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    return run
