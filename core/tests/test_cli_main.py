"""The root ``polyquant`` group: global options, error style, plugin-provided commands, standalone domain CLIs."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from polyquant.cli.main import BUILTIN_COMMANDS, CLIError, cli, run_domain_cli
from polyquant.errors import CheckpointError, FormatError, PolyquantError
from polyquant.plugins import CommandGroup, PluginManager, hookimpl


@click.group()
@click.option("--shout", is_flag=True, help="Greet loudly.")
@click.pass_context
def tools(ctx: click.Context, shout: bool) -> None:
    """Tools of a fake domain plugin."""
    ctx.obj = {"shout": shout}


@tools.command()
@click.argument("name")
@click.pass_obj
def hello(obj: dict[str, bool], name: str) -> None:
    """Greet NAME."""
    text = f"hello {name}"
    click.echo(text.upper() if obj["shout"] else text)


@click.command(help="")
@click.option("--times", type=int, default=1)
def bench(times: int) -> None:
    click.echo(f"bench x{times}")


@tools.command()
def fail() -> None:
    """Raise a polyquant error."""
    raise FormatError("format 'int5x' is unknown; run `polyquant formats` for the names")


@tools.command()
def crash() -> None:
    """Fail with a bug (not a user error)."""
    raise ZeroDivisionError("bug in the plugin")


class DomainPlugin:
    @hookimpl
    def polyquant_register_commands(self) -> list[CommandGroup]:
        return [CommandGroup("tools", tools, "fake domain tools")]


class SingleCommandPlugin:
    @hookimpl
    def polyquant_register_commands(self) -> list[CommandGroup]:
        return [CommandGroup("bench", bench, "a single command without its own help")]


class ShadowingPlugin:
    @hookimpl
    def polyquant_register_commands(self) -> list[CommandGroup]:
        return [CommandGroup("formats", tools, "tries to replace a built-in command")]


class BrokenCommandPlugin:
    @hookimpl
    def polyquant_register_commands(self) -> list[CommandGroup]:
        raise RuntimeError("cannot build my commands")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    import polyquant

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"polyquant {polyquant.__version__}"


def test_help_lists_builtin_and_plugin_commands(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    section = result.output.split("Commands:")[1]
    listed = {m.group(1) for m in re.finditer(r"^  (\S+)", section, flags=re.MULTILINE)}
    assert set(BUILTIN_COMMANDS) | {"tools"} == listed
    assert "fake domain tools" not in result.output  # the group's own docstring wins over the record's description
    assert "Tools of a fake domain plugin." in result.output


def test_plugin_command_is_mounted(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        assert runner.invoke(cli, ["tools", "hello", "world"]).output == "hello world\n"
        assert runner.invoke(cli, ["tools", "--shout", "hello", "world"]).output == "HELLO WORLD\n"


def test_record_description_stands_in_for_missing_help(
    runner: CliRunner, plugin_manager: PluginManager, registered
) -> None:
    with registered(SingleCommandPlugin(), "single"):
        helped = runner.invoke(cli, ["--help"])
        ran = runner.invoke(cli, ["bench", "--times", "3"])
    assert re.search(r"^  bench\s+a single command without its own help$", helped.output, flags=re.MULTILINE)
    assert ran.output == "bench x3\n"


def test_builtin_commands_win_over_plugin_commands(
    runner: CliRunner, plugin_manager: PluginManager, registered
) -> None:
    with registered(ShadowingPlugin(), "shadow"):
        listing = runner.invoke(cli, ["formats", "--json"])
        plugins = runner.invoke(cli, ["plugins"])
    assert listing.exit_code == 0 and '"int4"' in listing.output
    assert "command 'formats' from shadow is hidden by the built-in `polyquant formats`" in plugins.stderr


def test_broken_plugin_never_breaks_the_cli(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(BrokenCommandPlugin(), "broken", expect_status="failed") as info:
        assert "cannot build my commands" in (info.error or "")
        helped = runner.invoke(cli, ["--help"])
        listed = runner.invoke(cli, ["formats", "--json"])
    assert helped.exit_code == 0 and "formats" in helped.output
    assert listed.exit_code == 0


def test_polyquant_error_is_one_red_line(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        result = runner.invoke(cli, ["tools", "fail"], color=True)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "error: format 'int5x' is unknown; run `polyquant formats` for the names" in click.unstyle(lines[0])
    assert lines[0].startswith("\x1b[31m")  # red
    assert "Traceback" not in result.output


def test_debug_shows_the_original_exception(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        result = runner.invoke(cli, ["--debug", "tools", "fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, FormatError)


def test_debug_env_variable(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        result = runner.invoke(cli, ["tools", "fail"], env={"POLYQUANT_DEBUG": "1"})
    assert isinstance(result.exception, FormatError)


def test_bugs_are_not_disguised_as_user_errors(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(DomainPlugin(), "domain"):
        result = runner.invoke(cli, ["tools", "crash"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_missing_file_is_an_error_line(runner: CliRunner, tmp_path) -> None:
    result = runner.invoke(cli, ["inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1


def test_usage_errors_exit_2_with_suggestions(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = runner.invoke(cli, ["formatz"])
    assert result.exit_code == 2
    assert "No such command 'formatz'. Did you mean 'formats'" in result.stderr
    assert runner.invoke(cli, ["kernels", "--batch", "zero"]).exit_code == 2


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory", "model.pt"), "No such file or directory: model.pt"),
        (CheckpointError("checkpoint out/ is truncated; save it again"), "checkpoint out/ is truncated; save it again"),
        (PolyquantError("two\nlines"), "two lines"),
    ],
)
def test_cli_error_messages(exc: BaseException, expected: str) -> None:
    assert CLIError.from_exception(exc).format_message() == expected


def test_run_domain_cli_mounts_the_plugin_group_standalone(
    runner: CliRunner, plugin_manager: PluginManager, registered
) -> None:
    group = run_domain_cli("tools")  # built before the plugin exists: resolution is lazy
    assert group.name == "polyquant-tools"
    with registered(DomainPlugin(), "domain"):
        assert runner.invoke(group, ["hello", "you"]).output == "hello you\n"
        assert runner.invoke(group, ["--shout", "hello", "you"]).output == "HELLO YOU\n"  # the group's own option
        helped = runner.invoke(group, ["--help"])
        failed = runner.invoke(group, ["fail"])
        debug = runner.invoke(group, ["--debug", "fail"])
    assert (
        "Tools of a fake domain plugin." in helped.output and "--shout" in helped.output and "--debug" in helped.output
    )
    assert "hello" in helped.output and "fail" in helped.output
    assert isinstance(debug.exception, FormatError)
    assert failed.exit_code == 1 and failed.stderr.startswith("error: format 'int5x'")


def test_run_domain_cli_runs_a_single_command(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(SingleCommandPlugin(), "single"):
        assert runner.invoke(run_domain_cli("bench"), ["--times", "2"]).output == "bench x2\n"


def test_run_domain_cli_without_the_plugin(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = runner.invoke(run_domain_cli("nothing"), ["--help"])
    assert result.exit_code == 1
    assert "no plugin provides the command 'nothing'" in result.stderr


def test_run_domain_cli_names_a_failed_plugin(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(BrokenCommandPlugin(), "broken", expect_status="failed"):
        result = runner.invoke(run_domain_cli("broken"), ["--help"])
    assert result.exit_code == 1
    assert "plugin 'broken' is failed" in result.stderr and "cannot build my commands" in result.stderr


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "polyquant.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("polyquant ")
