"""``distillctl plugins``: every registered component, who provides it, and broken plugins."""

from typing import Annotated, Any

import typer

from distillctl.cli._common import console, echo_json


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins_document() -> dict[str, Any]:
    """``{"components": [...], "broken": [...]}``: the data behind the table and ``--json``."""
    from distillctl.plugins import KINDS, get_plugins

    loaded = get_plugins()
    components = []
    for kind in KINDS.values():  # hook order: teacher, student, splitter, policy, dataset, evaluator
        for entry in loaded.registry(kind):
            components.append(
                {
                    "kind": kind,
                    "name": entry.name,
                    "aliases": list(entry.aliases),
                    "prefix": entry.is_prefix,
                    "summary": entry.summary,
                    "plugin": entry.provenance.plugin,
                    "distribution": entry.provenance.distribution,
                    "version": entry.provenance.version,
                }
            )
    broken = [{"plugin": b.name, "distribution": b.distribution, "error": b.error} for b in loaded.broken]
    return {"components": components, "broken": broken}


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")] = False,
) -> None:
    """List every registered component (built-in and third-party) and any broken plugin.

    A plugin that fails to import or raises in a hook is listed below the table in red; the
    others keep working. Block a plugin with [bold]DISTILLCTL_DISABLE_PLUGINS=name[/bold].
    """
    doc = plugins_document()
    if as_json:
        echo_json(doc)
        return

    from rich.table import Table
    from rich.text import Text

    out = console()
    table = Table(title="distillctl components", title_justify="left")
    table.add_column("kind", style="cyan", no_wrap=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("aliases")
    table.add_column("provided by", no_wrap=True)
    table.add_column("summary")
    for c in doc["components"]:
        name = c["name"] + ("<variant>" if c["prefix"] else "")
        table.add_row(
            c["kind"],
            Text(name),
            Text(", ".join(c["aliases"])),
            Text(f"{c['distribution']} {c['version']}"),
            Text(c["summary"]),
        )
    if doc["components"]:
        out.print(table)
    else:
        out.print("no components registered", style="yellow")
    for b in doc["broken"]:
        line = f"broken plugin {b['plugin']!r} ({b['distribution']}): {b['error']}"
        out.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
