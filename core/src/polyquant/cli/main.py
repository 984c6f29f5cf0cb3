"""The ``polyquant`` command line: the root group, global options, error reporting, plugin commands.

Built-in commands live in sibling modules and are imported only when used, so ``polyquant --version``
stays fast. Every :class:`~polyquant.plugins.CommandGroup` a plugin registers is mounted as
``polyquant <name>``; a plugin whose command cannot be resolved is left out and never breaks the CLI.

Errors: a :class:`~polyquant.errors.PolyquantError` or an ``OSError`` becomes one red line
``error: <message>`` on stderr and exit status 1 (``--debug`` or ``POLYQUANT_DEBUG=1`` shows the
traceback instead); usage errors exit with status 2 as usual for click.

Example:
    >>> from click.testing import CliRunner
    >>> from polyquant.cli.main import cli
    >>> CliRunner().invoke(cli, ["--version"]).output.startswith("polyquant")
    True
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

import polyquant
from polyquant.errors import PolyquantError

__all__ = ["CLIError", "PolyquantGroup", "cli", "main", "run_domain_cli"]

DEBUG_ENV = "POLYQUANT_DEBUG"
_DEBUG_KEY = "polyquant.debug"

#: Built-in command name → ``"module:attribute"``; imported on first use.
BUILTIN_COMMANDS: dict[str, str] = {
    "plugins": "polyquant.cli.registries:plugins",
    "formats": "polyquant.cli.registries:formats",
    "quantizers": "polyquant.cli.registries:quantizers",
    "transforms": "polyquant.cli.registries:transforms",
    "kv-formats": "polyquant.cli.registries:kv_formats",
    "recipes": "polyquant.cli.registries:recipes",
    "kernels": "polyquant.cli.kernel_commands:kernels",
    "quantize": "polyquant.cli.model_commands:quantize",
    "inspect": "polyquant.cli.model_commands:inspect_checkpoint",
    "demo": "polyquant.cli.demo:demo",
}

F = TypeVar("F", bound=Callable[..., Any])


class CLIError(click.ClickException):
    """A user-facing error printed as one red line ``error: <message>`` (exit status 1).

    Example:
        >>> raise CLIError("recipe 'w5' is unknown; run `polyquant recipes` for the names")
        Traceback (most recent call last):
        polyquant.cli.main.CLIError: recipe 'w5' is unknown; run `polyquant recipes` for the names
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @classmethod
    def from_exception(cls, exc: BaseException) -> CLIError:
        """Build from a :class:`PolyquantError` or ``OSError``, keeping the message readable."""
        if isinstance(exc, OSError) and not isinstance(exc, PolyquantError) and exc.strerror:
            where = f": {exc.filename}" if exc.filename else ""
            return cls(f"{exc.strerror}{where}")
        return cls(str(exc) or type(exc).__name__)

    def show(self, file: Any = None) -> None:
        """Print ``error: <message>`` in red on stderr."""
        click.secho(f"error: {self.format_message()}", fg="red", err=file is None, file=file, color=self.show_color)


def is_debug(ctx: click.Context | None = None) -> bool:
    """Whether tracebacks are wanted (``--debug`` anywhere up the context chain, or ``POLYQUANT_DEBUG``)."""
    if ctx is not None and ctx.meta.get(_DEBUG_KEY):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _user_error(exc: BaseException) -> bool:
    if isinstance(exc, PolyquantError):
        return True
    return isinstance(exc, OSError) and exc.errno != errno.EPIPE


class PolyquantGroup(click.Group):
    """A click group with lazily imported built-ins, plugin-provided subcommands and polyquant's error style.

    Args:
        builtin_commands: name → ``"module:attribute"`` of commands imported on first use.
        plugin_commands: mount every plugin :class:`~polyquant.plugins.CommandGroup` as a subcommand.
        **kwargs: passed to :class:`click.Group`.
    """

    def __init__(
        self,
        *args: Any,
        builtin_commands: dict[str, str] | None = None,
        plugin_commands: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.builtin_commands = dict(builtin_commands or {})
        self.plugin_commands = plugin_commands

    # ------------------------------------------------------------------ command lookup
    def _plugin_command_records(self) -> dict[str, Any]:
        if not self.plugin_commands:
            return {}
        try:
            from polyquant.plugins import get_plugin_manager

            records = get_plugin_manager().get_commands()
        except Exception:  # noqa: BLE001 - a broken plugin system must leave the built-in commands usable
            return {}
        return {
            name: rec
            for name, rec in records.items()
            if name not in self.builtin_commands and name not in self.commands
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in, directly added and plugin command names, sorted."""
        names = set(self.commands) | set(self.builtin_commands) | set(self._plugin_command_records())
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Resolve a command: directly added, then built-in (imported now), then plugin-provided."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self.builtin_commands.get(cmd_name)
        if target is not None:
            module_name, _, attr = target.partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):  # pragma: no cover - guards the table above
                raise TypeError(f"{target} is not a click command")
            return command
        record = self._plugin_command_records().get(cmd_name)
        if record is None:
            return None
        return record.command  # type: ignore[no-any-return]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Like click's, but an unknown name gets suggestions among every lazily known command."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint} See `{ctx.command_path} --help`.", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands in ``--help``; a plugin command whose help cannot be built is shown as broken."""
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            try:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                text = command.get_short_help_str(max(formatter.width - 6 - len(name), 20))
                if not text and name in (records := self._plugin_command_records()):
                    text = records[name].description
            except Exception as exc:  # noqa: BLE001 - never let one command break --help
                text = f"(unavailable: {type(exc).__name__}: {exc})"
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    # ------------------------------------------------------------------ errors
    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run as a program; Python warnings are shown as one yellow ``warning:`` line each."""
        with warnings.catch_warnings():
            if not is_debug():
                warnings.showwarning = _show_warning
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the group; polyquant and OS errors become :class:`CLIError` unless ``--debug`` is on."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if isinstance(exc, click.ClickException) or not _user_error(exc) or is_debug(ctx):
                raise
            raise CLIError.from_exception(exc) from exc


def _show_warning(message: Warning | str, category: type[Warning], *where: Any, **_: Any) -> None:
    """``warnings.showwarning`` replacement: ``warning: <message>`` in yellow on stderr, no source line."""
    click.secho(f"warning: {' '.join(str(message).split())}", fg="yellow", err=True)


def global_options(version: str, package: str) -> Callable[[F], F]:
    """The options every polyquant root command has: ``--debug`` and ``--version``."""

    def decorate(func: F) -> F:
        func = click.option(
            "--debug",
            is_flag=True,
            is_eager=True,
            expose_value=False,
            help=f"Show full tracebacks on errors (or set {DEBUG_ENV}=1).",
            callback=_set_debug,
        )(func)
        return click.version_option(version, "--version", package_name=package, message="%(prog)s %(version)s")(func)

    return decorate


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG_KEY] = True


@click.group(
    name="polyquant",
    cls=PolyquantGroup,
    builtin_commands=BUILTIN_COMMANDS,
    plugin_commands=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
@global_options(polyquant.__version__, "polyquant-core")
def cli() -> None:
    """polyquant: quantize PyTorch models with pluggable formats, algorithms and kernels.

    Installed plugins add formats, quantizers, kernels, recipes and their own commands
    (run `polyquant plugins` to see them).
    """


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point ``polyquant``.

    Args:
        args: command line arguments (defaults to ``sys.argv[1:]``).
    """
    cli.main(args=list(args) if args is not None else None, prog_name="polyquant")
    raise SystemExit(0)  # pragma: no cover - click's standalone mode always exits


def run_domain_cli(name: str) -> PolyquantGroup:
    """The plugin command ``name`` mounted standalone: what a plugin's ``polyquant-<name>`` script runs.

    The plugin's command is looked up when the returned group runs, not when it is built, so a
    plugin's console-script module can call this at import time without loading any plugin.

    Args:
        name: the plugin command's name, as mounted under ``polyquant <name>``.

    Returns:
        A group named ``polyquant-<name>`` that behaves like the plugin's command at the top level: its
        options, callback, help and subcommands (``polyquant-llm quantize ...`` is ``polyquant llm
        quantize ...``), plus ``--debug``, ``--version`` and polyquant's error style. Call it (no
        arguments: ``sys.argv``) or point a console script at it.

    Example (``polyquant_llm/cli.py``, console script ``polyquant-llm = "polyquant_llm.cli:main"``)::

        from polyquant.cli.main import run_domain_cli

        main = run_domain_cli("llm")
    """

    def resolve() -> click.Command:
        from polyquant.plugins import get_plugin_manager

        pm = get_plugin_manager()
        record = pm.get_commands().get(name)
        if record is None:
            owners = [p for p in pm.plugins() if p.name == name]
            why = f" (plugin {name!r} is {owners[0].status}: {owners[0].error})" if owners and owners[0].error else ""
            raise CLIError(
                f"no plugin provides the command {name!r}{why}; install the plugin that provides it and check "
                f"`polyquant plugins`"
            )
        return record.command

    class DomainGroup(PolyquantGroup):
        """Takes over the plugin command's parameters, callback and help when it runs."""

        def make_context(
            self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
        ) -> click.Context:
            target = resolve()
            self.params = [*own_params, *target.params]
            self.callback = target.callback
            self.help = target.help or self.help
            if isinstance(target, click.Group):
                self.invoke_without_command = target.invoke_without_command
                self.no_args_is_help = target.no_args_is_help
            else:  # a single command: the program runs it directly
                self.invoke_without_command, self.no_args_is_help = True, False
            return super().make_context(info_name, args, parent, **extra)

        def list_commands(self, ctx: click.Context) -> list[str]:
            target = resolve()
            return sorted(target.list_commands(ctx)) if isinstance(target, click.Group) else []

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            target = resolve()
            return target.get_command(ctx, cmd_name) if isinstance(target, click.Group) else None

    @click.group(
        name=f"polyquant-{name}",
        cls=DomainGroup,
        help=f"The commands of the {name!r} plugin (the same as `polyquant {name} ...`).",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    )
    @global_options(polyquant.__version__, "polyquant-core")
    def group() -> None:
        pass

    own_params = list(group.params)
    assert isinstance(group, PolyquantGroup)
    return group
