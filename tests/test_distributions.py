"""Every distribution of the monorepo is laid out, named, installed and wired the same mechanical way.

plugins/llm → distribution polyquant-llm → import polyquant_llm → entry point ``llm`` (group ``polyquant``) →
console script ``polyquant-llm``; the umbrella ``polyquant``'s extras map onto those distributions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("llm", "diffusion", "vlm", "ssm", "protein", "vit")


@dataclass(frozen=True)
class Package:
    """What one package directory must provide."""

    directory: str
    distribution: str
    module: str
    entry_point: str | None  # name in the `polyquant` entry point group

    @property
    def path(self) -> Path:
        return ROOT / self.directory

    @property
    def pyproject(self) -> dict[str, Any]:
        return tomllib.loads((self.path / "pyproject.toml").read_text(encoding="utf-8"))


PACKAGES = (
    Package("core", "polyquant-core", "polyquant", None),
    Package("kernels", "polyquant-kernels", "polyquant_kernels", "kernels"),
    Package("packages/testkit", "polyquant-testkit", "polyquant_testkit", None),
    Package("packages/plugin-template", "polyquant-example", "polyquant_example", "example"),
    *(Package(f"plugins/{domain}", f"polyquant-{domain}", f"polyquant_{domain}", domain) for domain in DOMAINS),
)
PLUGINS = [package for package in PACKAGES if package.entry_point is not None]
ids = [package.directory for package in PACKAGES]


def _root() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    """``"polyquant-core<1,>=0.1"`` → ``("polyquant-core", {"<1", ">=0.1"})`` (markers dropped)."""
    match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?([^;]*)(;.*)?", text.replace(" ", ""))
    assert match, f"cannot parse requirement {text!r}"
    return match.group(1).lower().replace("_", "-"), frozenset(filter(None, match.group(3).split(",")))


def test_the_repository_has_exactly_these_packages() -> None:
    found = {
        path.parent.relative_to(ROOT).as_posix()
        for pattern in (
            "core/pyproject.toml",
            "kernels/pyproject.toml",
            "packages/*/pyproject.toml",
            "plugins/*/pyproject.toml",
        )
        for path in ROOT.glob(pattern)
    }
    assert found == {package.directory for package in PACKAGES}


@pytest.mark.parametrize("package", PACKAGES, ids=ids)
def test_layout(package: Package) -> None:
    assert (package.path / "README.md").is_file()
    assert (package.path / "src" / package.module / "__init__.py").is_file()
    assert (package.path / "src" / package.module / "py.typed").is_file()
    assert list((package.path / "tests").glob("test_*.py")), f"{package.directory}/tests has no test module"
    project = package.pyproject["project"]
    assert project["name"] == package.distribution
    assert project["version"] == _root()["project"]["version"]
    assert project["readme"] == "README.md"
    assert package.pyproject["build-system"]["build-backend"] == "hatchling.build"
    assert package.pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{package.module}"]


@pytest.mark.parametrize("package", PACKAGES, ids=ids)
def test_installed_from_this_checkout_and_importable(package: Package) -> None:
    assert importlib.metadata.version(package.distribution) == package.pyproject["project"]["version"]
    module = importlib.import_module(package.module)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(package.path / "src"), (
        f"{package.module} is imported from {module.__file__}, not from this checkout: run scripts/dev-install.sh"
    )


@pytest.mark.parametrize("package", [p for p in PACKAGES if p.directory != "core"], ids=lambda p: p.directory)
def test_depends_on_the_core_major_series(package: Package) -> None:
    requirements = dict(map(_requirement, package.pyproject["project"]["dependencies"]))
    assert requirements["polyquant-core"] == {">=0.1", "<1"}


@pytest.mark.parametrize("package", PLUGINS, ids=lambda p: p.directory)
def test_plugin_entry_point_is_declared_installed_and_loads(package: Package) -> None:
    declared = package.pyproject["project"]["entry-points"]["polyquant"]
    assert declared == {package.entry_point: f"{package.module}.plugin"}
    installed = {
        ep.name: ep
        for ep in importlib.metadata.distribution(package.distribution).entry_points
        if ep.group == "polyquant"
    }
    assert {name: ep.value for name, ep in installed.items()} == declared, (
        "the installed entry points differ from pyproject.toml: run scripts/dev-install.sh"
    )
    plugin = installed[package.entry_point].load()  # type: ignore[index]
    assert plugin is importlib.import_module(f"{package.module}.plugin")
    assert any(name.startswith("polyquant_register_") for name in dir(plugin))


def test_every_polyquant_entry_point_of_the_repository_loads() -> None:
    ours = {package.distribution for package in PACKAGES}
    loaded = set()
    for ep in importlib.metadata.entry_points(group="polyquant"):
        if ep.dist is not None and ep.dist.name in ours:
            ep.load()
            loaded.add(ep.name)
    assert loaded == {package.entry_point for package in PLUGINS}


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_console_script(domain: str) -> None:
    package = next(p for p in PACKAGES if p.directory == f"plugins/{domain}")
    assert package.pyproject["project"]["scripts"] == {f"polyquant-{domain}": f"polyquant_{domain}.cli:main"}
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=f"polyquant-{domain}")
    assert script.value == f"polyquant_{domain}.cli:main"


def test_core_console_script() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="polyquant")
    assert script.value == "polyquant.cli.main:main"
    assert script.dist is not None
    assert script.dist.name == "polyquant-core"


def test_umbrella_depends_on_core_and_kernels_of_its_minor_series() -> None:
    project = _root()["project"]
    assert project["name"] == "polyquant"
    major, minor, _patch = project["version"].split(".")
    series = {f">={major}.{minor}", f"<{major}.{int(minor) + 1}"}
    assert dict(map(_requirement, project["dependencies"])) == {"polyquant-core": series, "polyquant-kernels": series}


def test_umbrella_extras_map_onto_the_domain_plugins() -> None:
    extras = {name: dict(map(_requirement, reqs)) for name, reqs in _root()["project"]["optional-dependencies"].items()}
    plugin_dirs = sorted(path.name for path in (ROOT / "plugins").iterdir() if (path / "pyproject.toml").is_file())
    assert sorted(DOMAINS) == plugin_dirs
    for domain in DOMAINS:
        assert set(extras[domain]) == {f"polyquant-{domain}"}
    assert set(extras["all"]) == {f"polyquant-{domain}" for domain in DOMAINS}
    assert set(extras) == {*DOMAINS, "all", "dev"}
    assert {"pytest", "hypothesis", "ml-dtypes", "nox", "ruff", "mypy", "mkdocs", "build", "twine"} <= set(
        extras["dev"]
    )


def test_umbrella_metadata_is_installed_with_the_same_extras() -> None:
    metadata = importlib.metadata.metadata("polyquant")
    assert metadata["Version"] == _root()["project"]["version"]
    assert set(metadata.get_all("Provides-Extra") or []) == {*DOMAINS, "all", "dev"}


@pytest.mark.slow
def test_plugin_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT / "plugins/llm"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("polyquant_llm-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read("polyquant_llm-0.1.0.dist-info/entry_points.txt").decode()
        metadata = archive.read("polyquant_llm-0.1.0.dist-info/METADATA").decode()
    modules = {name for name in names if not name.startswith("polyquant_llm-0.1.0.dist-info/")}
    assert modules == {f"polyquant_llm/{name}" for name in ("__init__.py", "cli.py", "plugin.py", "py.typed")}
    assert "[polyquant]\nllm = polyquant_llm.plugin" in entry_points
    assert "polyquant-llm = polyquant_llm.cli:main" in entry_points
    assert re.search(r"^Requires-Dist: polyquant-core(<1,>=0\.1|>=0\.1,<1)$", metadata, re.MULTILINE)


@pytest.mark.slow
def test_umbrella_wheel_has_no_code(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("polyquant-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert all(name.startswith("polyquant-0.1.0.dist-info/") for name in archive.namelist())
        metadata = archive.read("polyquant-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: polyquant-llm<0.2,>=0.1; extra == 'llm'" in metadata
