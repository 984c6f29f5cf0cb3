"""Development sessions for the polyquant monorepo (https://nox.thea.codes).

Sessions (``nox -l`` lists them; ``nox`` alone runs lint, typecheck, docs and tests):

* ``tests``      one session per package (``nox -s "tests(llm)"``): install everything, run that package's tests.
* ``lint``       ``ruff check`` and ``ruff format --check``.
* ``typecheck``  mypy over the library code (strict for the core; see ``[tool.mypy]`` in pyproject.toml).
* ``docs``       ``mkdocs build --strict`` into ``site/``.
* ``build``      wheel and sdist of every distribution into ``dist/``, then ``twine check``.
* ``demo``       ``polyquant demo`` (arguments after ``--`` go to it).
* ``bench``      ``kernels/benchmarks/bench_linear.py`` (``nox -s bench -- --quick`` for a smoke run).
* ``quality``    ``core/benchmarks/quality.py``: every method at 2/3/4/8 bits on a small trained LM (docs/quality.md).

Every session that needs polyquant installs it with ``scripts/dev-install.sh``, the installer CI uses: every
package editable, with ``constraints.txt`` (torch pinned). Virtual environments see the interpreter's site
packages, so a torch already installed there is reused instead of downloaded.

Useful flags: ``nox -R`` reuses the environments and skips the installs; ``nox --no-venv -s tests`` runs in the
current environment; ``nox --force-python 3.12 -s tests`` picks another interpreter.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True

#: Environments reuse the interpreter's packages (torch is large); the installer still adds everything else.
SHARED_SITE = ["--system-site-packages"]

#: Package directories: core/, kernels/, packages/*/ and plugins/*/ with a pyproject.toml (as in scripts/lib.sh).
PACKAGES = [
    path.parent.relative_to(ROOT).as_posix()
    for pattern in (
        "core/pyproject.toml",
        "kernels/pyproject.toml",
        "packages/*/pyproject.toml",
        "plugins/*/pyproject.toml",
    )
    for path in sorted(ROOT.glob(pattern))
]

#: Test directories: each package's tests/ and the cross-package tests/ at the root.
TEST_DIRS = {Path(package).name: f"{package}/tests" for package in PACKAGES if (ROOT / package / "tests").is_dir()}
TEST_DIRS["repository"] = "tests"

TEST_ENV = {"TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def install_polyquant(session: nox.Session) -> None:
    """Install every package editable (skipped by ``nox -R`` / ``--no-install``; a no-op when up to date)."""
    session.run_install("bash", "scripts/dev-install.sh", external=True)


@nox.session(venv_params=SHARED_SITE)
@nox.parametrize("name", list(TEST_DIRS), ids=list(TEST_DIRS))
def tests(session: nox.Session, name: str) -> None:
    """Run one package's tests in its own process (``scripts/test.sh`` runs them all at once)."""
    install_polyquant(session)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", TEST_DIRS[name], *session.posargs, env=TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff (configured in pyproject.toml)."""
    session.install("-c", "constraints.txt", "ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_params=SHARED_SITE)
def typecheck(session: nox.Session) -> None:
    """Type-check the library code with mypy: strict for ``polyquant`` and the domain plugins."""
    install_polyquant(session)
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; warnings (broken links, pages missing from nav) are errors."""
    session.install("-c", "constraints.txt", "mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def build(session: nox.Session) -> None:
    """Build a wheel and an sdist of every distribution into dist/ and check their metadata with twine."""
    session.install("-c", "constraints.txt", "build>=1.2", "twine>=5", "hatchling>=1.24")
    out = ROOT / "dist"
    for stale in out.glob("*"):
        stale.unlink()
    for package in [".", *PACKAGES]:
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(out), package)
    session.run("twine", "check", "--strict", *sorted(str(path) for path in out.iterdir()))


@nox.session(venv_params=SHARED_SITE)
def demo(session: nox.Session) -> None:
    """Run ``polyquant demo``: a small trained network quantized with several recipes."""
    install_polyquant(session)
    session.run("polyquant", "demo", *session.posargs)


@nox.session(venv_params=SHARED_SITE)
def bench(session: nox.Session) -> None:
    """Run the kernel benchmarks (they measure speed; the tests never do)."""
    install_polyquant(session)
    session.run("python", "kernels/benchmarks/bench_linear.py", *session.posargs)


@nox.session(venv_params=SHARED_SITE)
def quality(session: nox.Session) -> None:
    """Every quantization method at 2, 3, 4 and 8 bits on a small trained language model (docs/quality.md)."""
    install_polyquant(session)
    session.run("python", "core/benchmarks/quality.py", *session.posargs)
