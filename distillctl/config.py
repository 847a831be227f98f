"""The run config: validated data, unknown keys rejected, every problem reported at once.

A config is a two-level table ``{section: {key: value}}``. Fixed sections (``train``, ``loss``,
``export``, ``eval``) have a schema below. Component sections (``teacher``, ``student``,
``splitter``, ``policy``, ``data``) hold ``name`` plus the component's options; those options are
checked against the registered factory's keyword parameters and their type annotations, so a
plugin's options are validated without building anything.
"""

from __future__ import annotations

import copy
import json

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillctl.errors import ConfigError, DuplicateComponentError, UnknownComponentError


@dataclass(frozen=True)
class Field:
    type: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    help: str = ""
    ge: float | None = None  # inclusive lower bound (numbers; floats must also be finite)
    gt: float | None = None  # exclusive lower bound
    le: float | None = None  # inclusive upper bound


# kind of the component section -> registry kind
COMPONENT_SECTIONS: dict[str, str] = {
    "teacher": "teacher",
    "student": "student",
    "splitter": "splitter",
    "policy": "policy",
    "data": "dataset",
    "family": "family",
}

# keys a component section has besides the factory's options
COMPONENT_FIELDS: dict[str, dict[str, Field]] = {
    "teacher": {
        "name": Field(str, required=True, help="registered teacher"),
        "weights": Field(str, None, help="path, local-dir:DIR, pretrained tag or 'random'"),
    },
    # student, policy and data have defaults, so a preset may hold only what differs (e.g. [teacher])
    "student": {"name": Field(str, "layer-subset", help="registered student builder")},
    "splitter": {"name": Field(str, "auto", help="module splitter; auto = the teacher's")},
    "family": {"name": Field(str, "auto", help="model family (forward, losses, export); auto = the teacher's")},
    "policy": {
        "name": Field(str, "optima", help="selection policy"),
        "arms": Field(str, "single", choices=("single", "combinations", "all"), help="arm set"),
    },
    "data": {
        "name": Field(str, "shapes", help="data source"),
        "workers": Field(int, 0, help="DataLoader worker processes", ge=0),
    },
}

SCHEMA: dict[str, dict[str, Field]] = {
    "train": {
        "episodes": Field(int, 20, help="number of episodes", ge=1),
        "episode_steps": Field(int, 10, help="optimizer steps per episode (T)", ge=1),
        "batch_size": Field(int, 32, ge=1),
        "lr": Field(float, 5e-4, gt=0),
        "weight_decay": Field(float, 0.05, ge=0),
        "warmup_steps": Field(int, 10, ge=0),
        "min_lr_ratio": Field(float, 0.0, help="cosine floor as a fraction of lr", ge=0, le=1),
        "grad_clip": Field(float, 1.0, help="max grad norm; 0 disables", ge=0),
        "seed": Field(int, 0, ge=0, le=2**63 - 1),
        "device": Field(str, "auto", choices=("auto", "cpu", "cuda")),
        "precision": Field(str, "fp32", choices=("fp32", "bf16")),
        "probe_batches": Field(int, 2, help="held-out batches for the probe loss (rewards)", ge=1),
        "probe_batch_size": Field(int, 0, help="0 = batch_size", ge=0),
        "threads": Field(int, 0, help="torch CPU threads; 0 = torch default", ge=0),
        "checkpoint_every": Field(int, 0, help="episodes between resumable checkpoints (OUT/checkpoints/last.pt); 0 = none",
                                  ge=0),
        "probe_cache": Field(str, "device", choices=("device", "host"),
                             help="where the probe set's cached teacher outputs live; host = pinned CPU memory"),
        "fsdp": Field(bool, False, help="FSDP2 (fully_shard): shard student and teacher over the ranks (--fsdp)"),
        "forward": Field(str, "full", choices=("full", "arm"),
                         help="full: every step runs the whole teacher and student; arm: a step runs only what the "
                              "arm's modules need (module-local steps, where the family declares them)"),
        "budget": Field(str, "steps", choices=("steps", "flops"),
                        help="what ends the run: episodes x episode_steps steps, or train.budget_flops of training compute "
                             "(then an episode spends what episode_steps full all-module steps cost, whatever its arm)"),
        "budget_flops": Field(float, 0.0, ge=0,
                              help="with budget = flops: training FLOPs (all ranks); 0 = what episodes x episode_steps "
                                   "full all-module steps cost"),
        "report_to": Field((list, str), None, help="experiment trackers to log to (--report-to tensorboard,wandb,mlflow)"),
        "report_options": Field(dict, None, help="per-tracker options, e.g. {wandb = {project = 'p'}, mlflow = {tracking_uri = '...'}}"),
    },
    "loss": {
        "w_task": Field(float, 1.0, help="weight of the family's task loss (CoCa: contrastive + caption)", ge=0),
        "w_kd": Field(float, 1.0, help="weight of the family's logit KD terms (CoCa: caption KL + contrastive KL)", ge=0),
        "w_lw": Field(float, 1.0, help="weight of the layerwise hidden-state loss", ge=0),
        "temperature": Field(float, 2.0, help="KD temperature", gt=0),
        "normalize_layers": Field(bool, True, help="divide each layer's MSE by the teacher state's mean square"),
        # measured (README "What to expect"): with full steps the layerwise reward's per-arm differences have an SNR
        # of 0.23 / 0.40 against 0.16 / 0.14 for total (reward_snr.py); with module-local steps only full steps
        # train the task and KD terms, and a layerwise reward starves them (quickstart-hard: probe 5.89 vs 4.99,
        # R@1 0.625 vs 0.677 over 3 seeds at equal FLOPs), so "auto" rewards the total loss there
        "reward_loss": Field(str, "auto", choices=("auto", "total", "layerwise", "task"),
                             help="probe loss used for rewards; auto = total with module-local steps (train.forward = arm), "
                                  "layerwise with full steps"),
        "arm_reduce": Field(str, "sum", choices=("sum", "mean"),
                            help="layerwise terms of a multi-module arm (and of the probe): sum or mean over its modules"),
        "warmup_rewards": Field(bool, False, help="feed the policy rewards of episodes that start inside the LR "
                                "warm-up (false: those episodes are a burn-in, arms cycled in a seeded order)"),
    },
    "eval": {
        "evaluators": Field(list, None, help="evaluators run at the end of distill; unset = the family's default"),
        "split": Field(str, "test"),
        "samples": Field(int, 1000, ge=1),
        "teacher": Field(bool, True, help="also evaluate the teacher, side by side"),
        "options": Field(dict, None, help="per-evaluator options, e.g. {captioning = {beams = 3}, zeroshot = {templates = 'simple'}}"),
    },
    "export": {
        "dtype": Field(str, "fp32", choices=("fp32", "bf16", "fp16")),
    },
}


# factory parameters the engine passes itself; users cannot set them as options
RESERVED_OPTIONS: dict[str, set[str]] = {
    "teacher": {"weights", "device", "variant"},
    "student": {"teacher", "splitter", "variant"},
    "splitter": {"variant"},
    "policy": {"arms", "seed", "variant"},
    "data": {"split", "variant"},
    "family": {"variant"},
}


def default_config() -> dict[str, dict[str, Any]]:
    cfg: dict[str, dict[str, Any]] = {}
    for section, fields in {**COMPONENT_FIELDS, **SCHEMA}.items():
        cfg[section] = {k: copy.deepcopy(f.default) for k, f in fields.items() if not f.required}
    return cfg


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "list"}.get(t.__name__, t.__name__)


def _check_type(value: Any, f: Field) -> Any:
    """Return the coerced value or raise ValueError with a message."""
    if value is None:
        if f.required:
            raise ValueError("required value missing")
        return None
    if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if f.type is int and isinstance(value, bool):
        raise ValueError(f"expected {_type_name(f.type)}, got {value!r}")
    if not isinstance(value, f.type):
        raise ValueError(f"expected {_type_name(f.type)}, got {type(value).__name__} {value!r}")
    if f.choices is not None and value not in f.choices:
        raise ValueError(f"expected one of {', '.join(map(str, f.choices))}, got {value!r}")
    return value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(raw: str) -> Any:
    """``--set`` values: TOML literal if it parses (1, 0.5, true, "x", [..]), else the raw string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings. Bad syntax is reported all at once."""
    cfg = copy.deepcopy(cfg)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected section.key=value")
            continue
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2 or not all(parts):
            problems.append(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-4")
            continue
        node = cfg
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item!r}: {p} is not a table")
                break
        else:
            node[parts[-1]] = parse_value(raw.strip())
    if problems:
        raise ConfigError(problems)
    return cfg


def validate(cfg: dict[str, Any], *, source: str | None = None, check_components: bool = True) -> dict[str, Any]:
    """Validate and fill defaults. Raises ConfigError listing every problem at once."""
    problems: list[str] = []
    out = default_config()
    known = {**COMPONENT_FIELDS, **SCHEMA}
    for section, table in cfg.items():
        if section not in known:
            problems.append(f"{section}: unknown section (valid: {', '.join(sorted(known))})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{section}: expected a table, got {type(table).__name__}")
            continue
        out[section].update(table)

    registries = None
    if check_components:
        from distillctl.plugins import get_plugins

        registries = get_plugins().registries

    for section, fields in known.items():
        if section not in out:
            continue
        table = out[section]
        for key, f in fields.items():
            try:
                table[key] = _check_type(table.get(key), f)
            except ValueError as exc:
                problems.append(f"{section}.{key}: {exc}")
        extra = [k for k in table if k not in fields]
        if section in SCHEMA:
            for k in extra:
                problems.append(f"{section}.{k}: unknown key (valid: {', '.join(sorted(fields))})")
            continue
        # component section: check the name and the factory's options
        name = table.get("name")
        if registries is None or not isinstance(name, str) or (section in ("splitter", "family") and name == "auto"):
            continue
        try:
            entry = registries[COMPONENT_SECTIONS[section]].get(name)
        except (UnknownComponentError, DuplicateComponentError) as exc:  # unknown, or two plugins claim it
            problems.append(f"{section}.name: {exc}")
            continue
        problems.extend(option_problems(section, entry, {k: table[k] for k in extra}, RESERVED_OPTIONS[section], name=name))
    if registries is not None:
        for section in ("family", "splitter"):  # "auto": the teacher's own, when its factory declares it
            if out[section].get("name") == "auto":
                problems.extend(_auto_option_problems(section, out, registries))
        problems.extend(check_evaluators(out["eval"], registries["evaluator"]))
        problems.extend(check_trackers(out["train"], registries["tracker"]))
    problems.extend(check_ranges(out))
    if problems:
        raise ConfigError(problems, source=source)
    out["loss"]["reward_loss"] = reward_loss(out)  # the run's config (report.json, run.toml) names what it used
    return out


def reward_loss(cfg: dict[str, Any]) -> str:
    """The probe loss the rewards are computed from: ``loss.reward_loss``, with ``auto`` resolved (``total`` when
    ``train.forward = "arm"``: module-local steps leave the task and KD terms to full steps, and a reward blind to
    them starves the decoder; ``layerwise`` with full steps, where its per-arm differences are less noisy)."""
    key = cfg["loss"]["reward_loss"]
    if key != "auto":
        return key
    return "total" if cfg["train"].get("forward") == "arm" else "layerwise"


def option_problems(label: str, entry: Any, options: dict[str, Any], reserved: set[str] | frozenset[str] = frozenset(),
                    *, name: str | None = None) -> list[str]:
    """``label.key: message`` for every option of ``entry`` (a registry ``Entry``) that is unknown, reserved
    (set by distillctl itself), of the wrong type for the factory's annotation, or required and missing.

    One check for every kind and every command (``presets validate``, ``distill``, ``eval``, ``compare``,
    ``simulate``): ``label`` is where the user wrote the options (``policy``, ``eval.options.captioning``,
    ``policy 'greedy[x=1]'``)."""
    problems: list[str] = []
    shown = name or entry.name
    known = entry.options()  # None: the factory takes **kwargs, so any other name may be an option
    for k, value in options.items():
        if k in reserved or (known is not None and k not in known):
            valid = (", ".join(sorted(set(known) - set(reserved))) or "none") if known is not None else "any other name"
            problems.append(f"{label}.{k}: unknown option for {entry.kind} {shown!r} (valid: {valid})")
            continue
        wrong = entry.check_option(k, value)  # against the factory's annotation; unknown types pass
        if wrong is not None:
            problems.append(f"{label}.{k}: {wrong}")
    engine = set(reserved) | ENGINE_ARGUMENTS.get(entry.kind, set())
    for k in entry.required_options(engine):
        if k not in options:
            problems.append(f"{label}.{k}: required option of {entry.kind} {shown!r} is missing; set it "
                            f"(e.g. --set {label}.{k}=VALUE)")
    return problems


# what the engine passes to each kind's factory (never options, never "missing")
ENGINE_ARGUMENTS: dict[str, set[str]] = {
    "teacher": {"weights", "device", "variant"},
    "student": {"teacher", "splitter", "variant"},
    "splitter": {"variant"},
    "policy": {"arms", "seed", "variant"},
    "dataset": {"split", "variant"},
    "family": {"variant"},
    "evaluator": {"variant"},
}


def _auto_option_problems(section: str, cfg: dict[str, Any], registries: dict[str, Any]) -> list[str]:
    """Options of an ``auto`` family or splitter: checked against the teacher's own when its factory
    declares it (``factory.family = "coca"``, ``factory.splitter = "coca"``), else against every
    registered one (an option no registered family takes is a typo whichever family the teacher names)."""
    options = {k: v for k, v in cfg[section].items() if k not in COMPONENT_FIELDS[section]}
    kind = COMPONENT_SECTIONS[section]
    declared = None
    teacher = cfg.get("teacher", {}).get("name")
    if isinstance(teacher, str):
        try:
            found = registries["teacher"].resolve(teacher, missing_ok=True)
        except DuplicateComponentError:
            found = None
        if found is not None:
            declared = getattr(found[0].factory, section, None)
    if isinstance(declared, str):
        try:
            entry = registries[kind].get(declared)
        except (UnknownComponentError, DuplicateComponentError) as exc:
            return [f"{section}.name: auto: teacher {teacher!r} names {kind} {declared!r}, which cannot be used: {exc}"]
        return option_problems(section, entry, options, RESERVED_OPTIONS[section], name=declared)
    problems = []
    candidates = [e for e in registries[kind] if not e.is_prefix]
    for k, value in options.items():
        takers = [e for e in candidates if k not in RESERVED_OPTIONS[section] and (e.options() is None or k in e.options())]
        if not takers:
            valid = sorted({o for e in candidates for o in (e.options() or {})} - RESERVED_OPTIONS[section])
            problems.append(f"{section}.{k}: no {kind} takes this option (auto: the teacher's {kind}; "
                            f"valid for some {kind}: {', '.join(valid) or 'none'})")
            continue
        wrong = [e.check_option(k, value) for e in takers]
        if all(w is not None for w in wrong):
            problems.append(f"{section}.{k}: {wrong[0]}")
    return problems


def old_evaluate_signature(entry: Any, evaluate: Any, *, name: str | None = None, bound: bool = True) -> str | None:
    """Why ``evaluate`` (an evaluator's method; ``bound=False``: the function on its class) cannot be called as
    the plugin API's ``evaluate(bundle, ctx)``, e.g. 0.1's ``evaluate(model, tokenizer, transform, dataset,
    *, device)``; None when it can (or its signature cannot be read)."""
    import inspect

    from distillctl import PLUGIN_API, __version__

    try:
        signature = inspect.signature(evaluate)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*([] if bound else [object()]), object(), object())
        return None
    except TypeError:
        params = list(signature.parameters.values())[0 if bound else 1:]
        names, star = [], False
        for p in params:  # names only: evaluate(model, tokenizer, transform, dataset, *, device)
            if p.kind is p.KEYWORD_ONLY and not star:
                names.append("*")
                star = True
            names.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
            star = star or p.kind is p.VAR_POSITIONAL
        shown = f"({', '.join(names)})"
        return (f"{entry.describe(name)} has evaluate{shown}, the signature of the 0.1 plugin API; distillctl {__version__} "
                f"(plugin API {PLUGIN_API}) calls evaluate(bundle, ctx) (model, tokenizer and transform in the bundle, "
                "dataset, device and samples in ctx; see the CHANGELOG's \"Breaking (plugin API)\"): upgrade the plugin.")


def options_tables(prefix: str, registry: Any, tables: dict[str, Any] | None) -> list[str]:
    """``{component: {option: value}}`` tables (``eval.options``, ``train.report_options``): every name registered,
    every table a table, every option checked by :func:`option_problems` (unknown, wrong type, required)."""
    problems: list[str] = []
    for name, opts in (tables or {}).items():
        try:
            entry = registry.get(str(name))
        except (UnknownComponentError, DuplicateComponentError) as exc:
            problems.append(f"{prefix}.{name}: {exc}")
            continue
        if not isinstance(opts, dict):
            problems.append(f"{prefix}.{name}: expected a table of options, got {type(opts).__name__}")
            continue
        problems.extend(option_problems(f"{prefix}.{name}", entry, opts, {"variant"}))
    return problems


def check_evaluators(ev: dict[str, Any], evaluators: Any) -> list[str]:
    """``eval.evaluators`` names and ``eval.options`` tables against the evaluator registry."""
    problems: list[str] = []
    names = ev.get("evaluators")
    for i, name in enumerate(names if isinstance(names, list) else []):
        try:
            entry = evaluators.get(str(name))
        except (UnknownComponentError, DuplicateComponentError) as exc:
            problems.append(f"eval.evaluators[{i}]: {exc}")
            continue
        evaluate = getattr(entry.factory, "evaluate", None) if isinstance(entry.factory, type) else None
        refusal = old_evaluate_signature(entry, evaluate, name=str(name), bound=False) if callable(evaluate) else None
        if refusal is not None:  # a class factory: its evaluate's signature is known before anything is built
            problems.append(f"eval.evaluators[{i}]: {refusal}")
    problems.extend(options_tables("eval.options", evaluators, ev.get("options")))
    for name in names if isinstance(names, list) else []:  # required options of every evaluator run
        try:
            entry = evaluators.get(str(name))
        except (UnknownComponentError, DuplicateComponentError):
            continue  # reported above
        if str(name) not in (ev.get("options") or {}) and entry.name not in (ev.get("options") or {}):
            problems.extend(option_problems(f"eval.options.{name}", entry, {}, {"variant"}))
    return problems


def check_trackers(train: dict[str, Any], trackers: Any) -> list[str]:
    """``train.report_to`` (a list, or a comma-separated string: normalised to a list here) and
    ``train.report_options`` against the tracker registry; no tracking library is imported."""
    problems: list[str] = []
    names = train.get("report_to")
    if isinstance(names, str):
        names = train["report_to"] = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    for i, name in enumerate(names if isinstance(names, list) else []):
        try:
            trackers.get(str(name))
        except (UnknownComponentError, DuplicateComponentError) as exc:
            problems.append(f"train.report_to[{i}]: {exc}")
    problems.extend(options_tables("train.report_options", trackers, train.get("report_options")))
    return problems


def check_ranges(cfg: dict[str, Any]) -> list[str]:
    """``section.key: message`` for every number outside its field's range (floats: also nan / inf).

    Values of the wrong type are left to the type check, so each problem is reported once.
    """
    import math

    problems = []
    for section, fields in {**COMPONENT_FIELDS, **SCHEMA}.items():
        table = cfg.get(section)
        if not isinstance(table, dict):
            continue
        for key, f in fields.items():
            v = table.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or f.type not in (int, float):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                problems.append(f"{section}.{key}: must be a finite number, got {v}")
            elif f.gt is not None and not v > f.gt:
                problems.append(f"{section}.{key}: must be greater than {_num(f.gt)}, got {v}")
            elif f.ge is not None and f.le is not None and not f.ge <= v <= f.le:
                problems.append(f"{section}.{key}: must be between {_num(f.ge)} and {_num(f.le)}, got {v}")
            elif f.ge is not None and v < f.ge:
                problems.append(f"{section}.{key}: must be at least {_num(f.ge)}, got {v}")
            elif f.le is not None and v > f.le:
                problems.append(f"{section}.{key}: must be at most {_num(f.le)}, got {v}")
    return problems


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def component_options(section: dict[str, Any], section_name: str) -> dict[str, Any]:
    """The plugin options of a component section (everything but the section's fixed keys)."""
    fixed = set(COMPONENT_FIELDS[section_name])
    return {k: v for k, v in section.items() if k not in fixed}


def preflight_teacher(cfg: dict[str, Any]) -> None:
    """Run the teacher factory's optional cheap ``preflight`` (no torch): weights that cannot be had
    fail in a second, before torch or open_clip is imported. A preflight that crashes is one
    ``PluginError`` line naming the plugin (``plugin_errors``)."""
    from distillctl.plugins import registry
    from distillctl.registry import plugin_errors

    found = registry("teacher").resolve(cfg["teacher"]["name"])
    assert found is not None
    entry, variant = found
    check = getattr(entry.factory, "preflight", None)
    if check is not None:
        extra = {"variant": variant} if variant is not None else {}  # prefix entries (timm:NAME) get their variant
        with plugin_errors(entry, "preflight", name=cfg["teacher"]["name"]):
            check(weights=cfg["teacher"].get("weights"), **extra, **component_options(cfg["teacher"], "teacher"))


def load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not a UTF-8 text file ({exc.reason} at byte {exc.start}); save it as UTF-8"],
                          source=str(path)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML ({exc})"], source=str(path)) from None


def dumps_toml(cfg: dict[str, Any]) -> str:
    """Write a two-level config as TOML (no dependency: values are str/int/float/bool/list)."""

    def lit(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {lit(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    lines: list[str] = []
    for section, table in cfg.items():
        lines.append(f"[{section}]")
        for k, v in table.items():
            if v is None:
                continue
            lines.append(f"{k} = {lit(v)}")
        lines.append("")
    return "\n".join(lines)
