"""``distillctl eval``: score a model -- a distilled student next to its teacher, or any model alone.

MODEL is a ``distill --out`` folder, an exported ``student.safetensors`` (or its folder), a teacher name
(``quickstart``, ``coca-base``...), or any ``open-clip:NAME`` / ``local-dir:DIR`` model. A student is
scored next to its teacher (the run's, or ``--teacher NAME``): every metric is shown for both, with the
ratio. Evaluator names are checked before any model is built; unreadable images of the evaluated split
are skipped and counted; metrics computed on too few items are flagged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from distillctl.cli._common import console, echo_json

WARN = "⚠"


def _student_file(model: str) -> Path | None:
    """The ``student.safetensors`` MODEL names (a run folder, an export folder, the file, ``local-dir:DIR``)."""
    spec = model[len("local-dir:"):] if model.startswith("local-dir:") else model
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".safetensors":
        return p
    for name in ("student.safetensors", "open_clip_model.safetensors"):  # a run / export folder, or `export --hf`'s layout
        if p.is_dir() and (p / name).is_file() and (name == "student.safetensors" or _is_distillctl_export(p / name)):
            return p / name
    return None


def _is_distillctl_export(path: Path) -> bool:
    """A safetensors file distillctl wrote (its metadata holds the model config)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "model_config" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - not readable as safetensors: not ours
        return False


def _looks_like_path(model: str) -> bool:
    return "/" in model or model.startswith(".") or model.endswith((".safetensors", ".pt", ".bin"))


def _teacher_spec(model: str) -> str:
    """A registry name for a model that is not a distillctl student (``local-dir:DIR`` -> ``open-clip:local-dir:DIR``)."""
    if model.startswith("local-dir:"):
        return f"open-clip:{model}"
    if Path(model).expanduser().is_dir() and (Path(model).expanduser() / "open_clip_config.json").is_file():
        return f"open-clip:local-dir:{model}"
    return model


def register(app: typer.Typer) -> None:
    @app.command("eval", rich_help_panel="Distillation")
    def eval_(
        model: Annotated[str, typer.Argument(
            metavar="MODEL",
            help="A distill --out folder, an exported student (folder or .safetensors), a teacher name, or an "
                 "open-clip:NAME / local-dir:DIR model (scored alone).")],
        data: Annotated[str | None, typer.Option(help="Data source (default: the run's): shapes, csv, coco, karpathy, folder...")] = None,
        split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
        evaluators: Annotated[str | None, typer.Option(
            help="Comma-separated: retrieval, zeroshot, captioning, fidelity, efficiency (see `distillctl plugins`); "
                 "default: the run's eval.evaluators, else the model family's.")] = None,
        samples: Annotated[int, typer.Option(help="Items to evaluate (captioning: at most 200 unless its samples option is set).")] = 1000,
        teacher: Annotated[str | None, typer.Option(
            "--teacher", help="Teacher to score side by side (name or open-clip:/local-dir: model); default: the run's.")] = None,
        no_teacher: Annotated[bool, typer.Option("--no-teacher", help="Score the model alone.")] = False,
        teacher_weights: Annotated[str | None, typer.Option(help="Weights of --teacher (path, tag, local-dir:DIR, random).")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="data.key=value (data source) or eval.options.EVALUATOR.key=value, e.g. "
                          "eval.options.captioning.beams=3.")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
        save_predictions: Annotated[Path | None, typer.Option(
            help="Folder for captions_results.json (COCO results format) and eval.json (every number).")] = None,
    ) -> None:
        """Evaluate a model: a student next to its teacher (with ratios), or any model alone."""

        from distillctl.config import (
            RESERVED_OPTIONS,
            apply_overrides,
            check_evaluators,
            component_options,
            load_toml,
            option_problems,
        )
        from distillctl.engine import resolve_device
        from distillctl.errors import ConfigError, DistillctlError, UsageError
        from distillctl.plugins import get_plugins, registry

        if samples < 1:
            raise UsageError(f"--samples must be at least 1, got {samples}.")
        names = [e.strip() for e in (evaluators or "").split(",") if e.strip()]
        for name in names:
            registry("evaluator").get(name)  # unknown names fail before any model is loaded

        # ---------------------------------------------------------------- what MODEL is
        student_file = _student_file(model)
        run_dir: Path | None = None
        if student_file is None:
            spec = _teacher_spec(model)
            if spec == model and _looks_like_path(model) and not model.startswith(("open-clip:",)):
                raise DistillctlError(f"no such run: {model}; pass the --out folder of a distill run, an exported "
                                      "student, a teacher name or an open-clip:/local-dir: model.")
            registry("teacher").get(spec)  # an unknown name fails now, with suggestions
        else:
            run_dir = student_file.parent
        run_cfg = load_toml(run_dir / "run.toml") if run_dir is not None and (run_dir / "run.toml").is_file() else {}

        # ---------------------------------------------------------------- data and options
        data_section = dict(run_cfg.get("data", {}))
        if data is not None and data != data_section.get("name"):
            data_section = {"name": data}
        if "name" not in data_section:
            where = f"{run_dir} has no run.toml naming its data source" if run_dir else "no data source"
            raise DistillctlError(f"{where}; pass --data (e.g. --data shapes, or --data coco --set data.path=FILE).")
        eval_section = {"options": dict(run_cfg.get("eval", {}).get("options") or {})}
        overridden = apply_overrides({"data": data_section, "eval": eval_section}, list(set_ or []))
        if set(overridden) != {"data", "eval"} or set(overridden["eval"]) != {"options"}:
            raise UsageError("eval --set takes data.key=value or eval.options.EVALUATOR.key=value, "
                             "e.g. --set data.path=captions.json.")
        data_section, options = overridden["data"], overridden["eval"]["options"]
        if not names:
            names = list(run_cfg.get("eval", {}).get("evaluators") or [])
        problems = check_evaluators({"evaluators": names, "options": options}, get_plugins().registries["evaluator"])
        if problems:
            raise ConfigError(problems)
        if save_predictions is not None:
            options = {**options, "captioning": {**options.get("captioning", {}), "save_predictions": str(save_predictions)}}
        entry = registry("dataset").get(data_section.get("name", ""))
        opts = component_options(data_section, "data")
        problems = option_problems("data", entry, opts, RESERVED_OPTIONS["data"])  # unknown, typed, required
        if problems:  # --set on the command line: a usage error (exit code 2), all problems on one line
            raise UsageError("; ".join(problems) + ".")

        # ---------------------------------------------------------------- models
        from distillctl.evaluation import EvalData
        from distillctl.export import load_student

        dev = resolve_device(device)
        ds = EvalData(registry("dataset").create(entry.name, split=split, **opts))
        meta: dict[str, str] = {}
        if student_file is not None:
            bundle, meta = load_student(student_file, str(dev))
            layer_map = _run_layer_map(run_dir)
            if layer_map:
                bundle.extra = {**bundle.extra, "layer_map": layer_map}
        else:
            bundle = registry("teacher").create(_teacher_spec(model), device=str(dev))
        family = registry("family").create(bundle.family)
        names = names or list(getattr(family, "evaluators", ())[:1])
        t_bundle = None
        t_name = teacher or (meta.get("teacher") if student_file is not None else None)
        if t_name and not no_teacher:
            weights = teacher_weights if teacher else (teacher_weights or meta.get("teacher_weights"))
            t_bundle = registry("teacher").create(_teacher_spec(t_name), device=str(dev),
                                                  weights=None if weights in (None, "bundled") else weights)
        from distillctl.default_plugins.evaluators import undersampled
        from distillctl.engine import evaluate_bundles

        notes: list[str] = []
        results = evaluate_bundles(names, family, ds, bundle, t_bundle, device=str(dev), samples=samples,
                                   options=options, notes=notes)
        doc = _document(model, ds, results, notes, t_bundle is not None, student_file is not None, str(dev))
        doc["flags"] = {side: undersampled(m) for side, m in results.items()}
        if save_predictions is not None:
            save_predictions.mkdir(parents=True, exist_ok=True)
            (save_predictions / "eval.json").write_text(json.dumps(doc, indent=2) + "\n")
        if json_:
            echo_json(doc)
            return
        _print_table(doc)


def _run_layer_map(run_dir: Path | None) -> dict[str, Any] | None:
    """The layer map a run recorded (``report.json`` ``student.layer_map``), for fidelity."""
    if run_dir is None or not (run_dir / "report.json").is_file():
        return None
    try:
        return json.loads((run_dir / "report.json").read_text()).get("student", {}).get("layer_map")
    except (OSError, ValueError):
        return None


def _document(model: str, ds: Any, results: dict[str, dict[str, float]], notes: list[str], paired: bool,
              is_student: bool, device: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": model, "data": ds.describe(), "device": device,
                           "role": "student" if is_student else "model", **results}
    if paired:
        s, t = results["student"], results["teacher"]
        doc["ratio"] = {k: s[k] / t[k] for k in s if k in t and isinstance(t[k], (int, float)) and t[k]}
    doc["skipped"] = {"count": len(ds.skipped), "summary": ds.skip_summary(),
                      "first": [ds.skipped[i] for i in sorted(ds.skipped)[:5]]}
    doc["notes"] = list(dict.fromkeys(notes))
    return doc


def _print_table(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from distillctl.report import fmt

    paired = "teacher" in doc
    s, t = doc["student"], doc.get("teacher", {})
    flags = {**doc["flags"].get("teacher", {}), **doc["flags"].get("student", {})}
    table = Table(title=doc["data"], title_justify="left")
    first = "student" if doc["role"] == "student" else "model"
    for c in ("metric", first, *(["teacher", "student / teacher"] if paired else [])):
        table.add_column(c, justify="left" if c == "metric" else "right")
    keys = list(dict.fromkeys([*s, *t]))
    for k in keys:
        sv, tv = s.get(k), t.get(k)
        label = f"{k} {WARN}" if k in flags else k
        row = [label, fmt(sv)]
        if paired:
            row += [fmt(tv), f"{sv / tv:.0%}" if sv is not None and tv else "-"]
        table.add_row(*row)
    out = console()
    out.print(table)
    if flags:
        why = sorted(set(flags.values()))
        out.print(f"{WARN} computed on too few items to be meaningful ({'; '.join(why)})", markup=False)
    if doc["skipped"]["summary"]:
        out.print(doc["skipped"]["summary"], markup=False)
    for note in doc["notes"]:
        out.print(f"note: {note}", markup=False)
