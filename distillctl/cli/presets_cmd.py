"""``distillctl presets list|show|validate``: the bundled run configs."""

from typing import Annotated

import typer

from distillctl.cli._common import console, echo_json

presets_app = typer.Typer(
    help="Bundled run configs (presets): list them, show one, validate one with overrides.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(presets_app, name="presets")


@presets_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")] = False,
) -> None:
    """List the bundled presets (and installed plugins' presets) with their one-line summary and launch command."""
    from distillctl.presets import list_presets

    infos = list_presets(include_plugins=True)
    if as_json:
        echo_json({"presets": [{"name": i.name, "path": str(i.path), "summary": i.summary, "command": i.command,
                                "provider": i.provider} for i in infos]})
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="distillctl presets", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("summary")
    table.add_column("launch command", style="green")
    for info in infos:
        note = "" if info.provider == "distillctl" else f" ({info.provider})"
        table.add_row(Text(info.name), Text(info.summary + note), Text(info.command))
    out = console()
    if infos:
        out.print(table)
    else:
        out.print("no bundled presets found", style="yellow")


@presets_app.command("show")
def show(
    preset: Annotated[str, typer.Argument(help="A bundled preset name or a path to a .toml file.")],
) -> None:
    """Print a preset's TOML, header comment (summary + launch command) included."""
    from distillctl.presets import find_preset

    path = find_preset(preset)
    text = path.read_text(encoding="utf-8")
    out = console()
    if out.is_terminal:
        from rich.syntax import Syntax

        out.print(Syntax(text, "toml", theme="ansi_dark", background_color="default"))
    else:  # piped: the exact file text, so `presets show smoke > my.toml` is a valid preset
        typer.echo(text, nl=not text.endswith("\n"))


@presets_app.command("validate")
def validate(
    preset: Annotated[str, typer.Argument(help="A bundled preset name or a path to a .toml file.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one value (repeatable)."),
    ] = None,
) -> None:
    """Check a preset (plus [bold]--set[/bold] overrides) without building anything.

    Checks section and key names, value types, that every component name is registered, and each
    component's options against its factory. Every problem is reported at once, one per line.
    """
    from distillctl import config
    from distillctl.errors import ConfigError
    from distillctl.presets import find_preset, load_preset, preset_display_name

    path = find_preset(preset)
    name = preset_display_name(preset, path)
    try:
        cfg = config.apply_overrides(load_preset(path), list(overrides or []))
    except ConfigError as exc:  # name the preset in --set syntax errors too
        raise ConfigError(exc.problems, source=exc.source or name) from None
    config.validate(cfg, source=name, check_components=True)
    console().print(f"ok: {name} is valid", style="green", markup=False, highlight=False, soft_wrap=True)
