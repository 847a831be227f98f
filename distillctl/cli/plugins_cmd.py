"""``distillctl plugins``: every registered component, who provides it, clashes and broken plugins."""

from typing import Annotated, Any

import typer

from distillctl.cli._common import console, echo_json


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins_document() -> dict[str, Any]:
    """``{"components": [...], "clashes": [...], "shadowed": [...], "broken": [...]}``: the data behind the
    table and ``--json``.

    Both sides of a clash are listed (``"clash": true``); each clash carries its one-line message
    with the ``DISTILLCTL_DISABLE_PLUGINS=...`` values that resolve it.
    """
    from distillctl.plugins import KINDS, get_plugins

    loaded = get_plugins()
    clashes = loaded.clashes()
    clashing = {id(e) for c in clashes for e in c.entries}
    shadows = loaded.shadowed()
    shadowed = {id(sh.entry): sh for sh in shadows}
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
                    "clash": id(entry) in clashing,
                    # a built-in has this name: the built-in keeps it, this component answers to use_as
                    "shadowed": id(entry) in shadowed,
                    "use_as": loaded.registry(kind).key_of(entry),
                }
            )
    clash_docs = [
        {
            "kind": c.kind,
            "names": list(c.names),
            "plugins": [{"plugin": p.plugin, "distribution": p.distribution, "version": p.version} for p in c.plugins()],
            "fixes": [value for value, _ in c.fixes()],
            "message": c.line(),
        }
        for c in clashes
    ]
    shadow_docs = [
        {"kind": sh.kind, "names": list(sh.names), "plugin": sh.entry.provenance.plugin,
         "distribution": sh.entry.provenance.distribution, "version": sh.entry.provenance.version,
         "use_as": sh.alias, "message": sh.line()}
        for sh in shadows
    ]
    broken = [
        {"plugin": b.name, "distribution": b.distribution, "version": b.version, "error": b.error} for b in loaded.broken
    ]
    return {"components": components, "clashes": clash_docs, "shadowed": shadow_docs, "broken": broken}


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")] = False,
) -> None:
    """List every registered component (built-in and third-party), name clashes and broken plugins.

    A plugin that fails to import or raises in a hook is listed below the table in red; the
    others keep working. Two plugins registering one name are both listed, with the
    [bold]DISTILLCTL_DISABLE_PLUGINS=...[/bold] value that resolves the clash; only that name
    refuses to be used until then.
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
        if c["shadowed"] and c["use_as"] != c["name"]:
            name = f"{c['use_as']} (shadowed: {c['name']} is the built-in)"
        table.add_row(
            c["kind"],
            Text(name + (" (clash)" if c["clash"] else ""), style="red" if c["clash"] else ("yellow" if c["shadowed"] else "")),
            Text(", ".join(c["aliases"])),
            Text(f"{c['distribution']} {c['version']}"),
            Text(c["summary"]),
        )
    if doc["components"]:
        out.print(table)
    else:
        out.print("no components registered", style="yellow")
    for c in doc["clashes"]:
        out.print(f"clash: {c['message']}", style="red", markup=False, highlight=False, soft_wrap=True)
    for sh in doc["shadowed"]:
        out.print(f"shadowed: {sh['message']}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    from distillctl.errors import debug_enabled
    from distillctl.plugins import get_plugins

    for b in get_plugins().broken:  # the format the guide documents: plugin 'x' (dist 1.0) is broken: ...
        if b.traceback and debug_enabled():  # DISTILLCTL_DEBUG=1: where it broke
            out.print(b.traceback.rstrip(), markup=False, highlight=False, soft_wrap=True)
        out.print(b.line(), style="red", markup=False, highlight=False, soft_wrap=True)
