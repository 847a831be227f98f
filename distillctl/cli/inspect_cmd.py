"""``distillctl inspect``: renders :func:`distillctl.inspect.inspect_document` (the logic lives in the library)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from distillctl.cli._common import console, echo_json

GIB = 1024**3


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def inspect(
    teacher: Annotated[str, typer.Option("--teacher", help="Registered teacher name (see `distillctl plugins`).")] = "quickstart",
    student: Annotated[
        str | None, typer.Option("--student", help="Student builder, e.g. layer-subset or config (optional).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Component option section.key=value, e.g. student.ratio=0.5 (repeatable)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size of the memory estimate.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")] = False,
) -> None:
    """Sizes, layer map, projections and training-memory estimate of a teacher (and student), no weights read.

    The models are built on the meta device: no weights are read and no memory is used.
    """
    from distillctl.inspect import inspect_document

    doc = inspect_document(teacher, student, overrides or [], batch_size)
    if as_json:
        echo_json(doc)
    else:
        render(doc)


# --------------------------------------------------------------------------- rendering
def _m(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.2f}M"


def render(doc: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    t, s = doc["teacher"], doc["student"]
    title = f"teacher {t['name']}" + (f" -> student {s['name']}" if s else "") + f"  (built on {t['built_on']}, no weights read)" * (t["built_on"] == "meta")
    table = Table(title=title, title_justify="left", caption=doc["counts"], caption_justify="left")
    wide = out.width >= 110  # the tower and blocks-only columns fit; --json always has them
    table.add_column("module", style="bold")
    if wide:
        table.add_column("tower")
    table.add_column("teacher L x W", justify="right")
    table.add_column("params", justify="right")
    if wide:
        table.add_column("blocks", justify="right")
    if s:
        table.add_column("student L x W", justify="right")
        table.add_column("params", justify="right")
        if wide:
            table.add_column("blocks", justify="right")
        table.add_column("ratio", justify="right")
    s_mods = {m["name"]: m for m in s["modules"]} if s else {}
    for m in t["modules"]:
        row = [m["name"], *([m["tower"]] if wide else []), f"{m['layers']} x {m['width']}", _m(m["params"]),
               *([_m(m["block_params"])] if wide else [])]
        if s:
            sm = s_mods.get(m["name"])
            ratio = doc["compression"]["modules"].get(m["name"])
            if sm:
                row += [f"{sm['layers']} x {sm['width']}", _m(sm["params"]), *([_m(sm["block_params"])] if wide else [])]
            else:
                row += ["-"] * (3 if wide else 2)
            row.append("-" if ratio is None else f"{ratio:.3f}")
        table.add_row(*row)
    total = ["total", *([""] if wide else []), "", _m(t["params"]), *([""] if wide else [])]
    if s:
        total += ["", _m(s["params"]), *([""] if wide else []), f"{doc['compression']['params']:.3f}"]
    table.add_row(*total, style="bold")
    out.print(table)

    if doc["layer_map"]:
        lm = Table(title="layer map (student layer i <- teacher layer)", title_justify="left")
        lm.add_column("module", style="bold")
        lm.add_column("stack")
        lm.add_column("teacher layers kept / paired")
        for module, stacks in doc["layer_map"].items():
            for stack, idx in stacks.items():
                lm.add_row(module, stack, ", ".join(map(str, idx)))
        out.print(lm)
    if doc["projections"]:
        pj = Table(title="projections (trained, never exported)", title_justify="left")
        for col in ("student layer", "teacher layer", "nn.Linear", "params"):
            pj.add_column(col)
        for p in doc["projections"]:
            pj.add_row(p["student_layer"], p["teacher_layer"], f"{p['linear'][0]} -> {p['linear'][1]}", f"{p['params']:,}")
        out.print(pj)
    elif s:
        out.print("projections: none (every paired layer has the same width)")

    mem = doc["memory"]
    mt = Table(title=f"estimated training memory, batch {mem['batch_size']} (student: {mem['student']})", title_justify="left",
               caption=mem["formula"], caption_justify="left")
    mt.add_column("precision", style="bold")
    for col in ("weights", "grads", "AdamW", "activations", "probe cache", "total"):
        mt.add_column(col, justify="right")
    for precision in ("fp32", "bf16"):
        r = mem[precision]
        mt.add_row(precision, *(f"{r[k] / GIB:,.2f} GiB" for k in ("weights", "grads", "optimizer", "activations",
                                                                    "probe_cache", "total")))
    out.print(mt)
    if not mem["complete"]:
        out.print("[yellow]activations: no dummy forward for this model, block activations not counted[/yellow]")
    from rich.text import Text

    for note in doc["notes"]:
        out.print(Text.assemble(("note: ", "yellow"), note))
