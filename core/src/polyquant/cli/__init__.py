"""The ``polyquant`` command line (``polyquant --help``); see :mod:`polyquant.cli.main`."""

from __future__ import annotations

from polyquant.cli.main import CLIError, PolyquantGroup, cli, main, run_domain_cli

__all__ = ["CLIError", "PolyquantGroup", "cli", "main", "run_domain_cli"]
