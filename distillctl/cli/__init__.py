"""The ``distillctl`` command line: one Typer app, one error boundary.

Each command module exposes ``register(app)``; ``COMMAND_MODULES`` lists them in help order.
Command bodies import heavy libraries (torch, open_clip) inside the function, so ``--help``,
``--version``, ``plugins`` and ``presets`` stay fast.

The error boundary lives in :class:`DistillctlGroup.main` so that every way of running the app
goes through it (the console script, ``python -m distillctl``, ``torchrun -m distillctl`` and
``typer.testing.CliRunner``): a :class:`~distillctl.errors.DistillctlError` becomes one red
``error: ...`` line on stderr and exit code ``exc.exit_code`` (1; usage errors 2). An exception raised
inside a third-party plugin's code becomes one ``PluginError`` line naming the plugin, its distribution
and version (:func:`distillctl.plugins.plugin_fault`). With ``DISTILLCTL_DEBUG=1`` the error is
re-raised with its traceback. Anything else is a bug and keeps its traceback. Click usage errors keep
click's exit code 2.
"""

import importlib
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from distillctl import __version__
from distillctl.cli._common import debug_enabled, report_error
from distillctl.errors import DistillctlError

COMMAND_MODULES: tuple[str, ...] = ("distill_cmd", "eval_cmd", "compare_cmd", "simulate_cmd", "plugins_cmd", "presets_cmd", "inspect_cmd",
                                     "report_cmd", "share_cmd")


class DistillctlGroup(TyperGroup):
    """The root command group; its ``main`` is the one error boundary."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except DistillctlError as exc:
            if debug_enabled():
                raise
            sys.exit(report_error(exc))
        except Exception as exc:  # a plugin's own exception that no call site turned into a PluginError
            from distillctl.plugins import plugin_fault

            fault = plugin_fault(exc)
            if fault is None or debug_enabled():  # distillctl's own bug (or DISTILLCTL_DEBUG=1): the traceback
                raise
            sys.exit(report_error(fault))


app = typer.Typer(
    name="distillctl",
    cls=DistillctlGroup,
    help=(
        "Compress multimodal foundation models (open_clip CoCa) by module-wise adaptive "
        "layerwise distillation (OPTIMA).\n\n"
        "Set [bold]DISTILLCTL_DEBUG=1[/bold] to see tracebacks, "
        "[bold]DISTILLCTL_DISABLE_PLUGINS=a,b[/bold] to block plugins."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"distillctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Show the version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """Compress multimodal foundation models by module-wise adaptive layerwise distillation."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Console-script entry point (``distillctl``)."""
    app()
