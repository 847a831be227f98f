"""What ``distillctl inspect`` shows: a teacher (and a student) without weights: layers, widths, params, memory.

The teacher is built on PyTorch's ``meta`` device (no weights read, no memory), so even
``--teacher coca-large`` answers offline in seconds. A teacher plugin whose factory cannot build on
``meta`` is built on the CPU instead (with its weights), and the output says so.

Parameter rows count the module's whole *tower* (every parameter under the module's path prefix,
e.g. ``visual.``: stem, blocks, pooler, projection); the ``blocks`` column counts the stacked layers
only. The total also includes parameters outside every tower (e.g. ``logit_scale``).

Training memory (per process, one optimizer step), with P = trainable params (student + projections),
P_t = teacher params, b = bytes per activation element (fp32 4, bf16 2)::

    weights      fp32: 4·(P_t + P)       bf16: 2·P_t + 4·P   (fp32 master weights for what trains)
    grads        4·P
    AdamW        8·P                     (exp_avg + exp_avg_sq, fp32)
    activations  b · Σ_student blocks B·L·(16·D + h·L_kv) + 2·B·L_kv·D for cross-attention blocks
                 + b · Σ_tapped teacher layers B·L·D_t    (teacher runs under no_grad: only taps are kept)
                 + 4 · 4·B·L_out·V                        (caption logits: student logits + log-softmax,
                                                           teacher logits + probabilities, fp32)

``16·D`` per token and block counts what autograd keeps (LN inputs, QKV, attention output, MLP 4·D
hidden before and after GELU, residual); ``h·L_kv`` the attention probabilities of the math kernel
(fused CUDA kernels keep less). Stems, poolers and allocator overhead are not counted.
"""

from __future__ import annotations

from typing import Any

from distillctl.errors import ConfigError, UsageError
from distillctl.torch_utils import count_params, model_device

RESERVED = {"weights", "device", "teacher", "splitter", "arms", "seed", "split", "variant", "name"}
GIB = 1024**3


# --------------------------------------------------------------------------- data
def _split_overrides(overrides: list[str]) -> dict[str, dict[str, Any]]:
    from distillctl.config import apply_overrides

    tables = apply_overrides({}, overrides)
    bad = sorted(set(tables) - {"teacher", "student", "splitter", "family"})
    if bad:
        raise UsageError(
            f"inspect reads only teacher.*, student.*, splitter.* and family.* overrides, got {', '.join(bad)}.*",
            hint="Use --batch-size for the memory estimate.",
        )
    return {k: dict(v) for k, v in tables.items()}


def _check_options(kind: str, name: str, entry: Any, options: dict[str, Any]) -> None:
    valid = entry.options()
    if valid is None:
        return
    allowed = set(valid) - RESERVED
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ConfigError(
            [f"{kind}.{k}: unknown option for {kind} {name!r} (valid: {', '.join(sorted(allowed)) or 'none'})" for k in unknown]
        )


def _build_teacher(name: str, options: dict[str, Any], notes: list[str]) -> tuple[Any, str]:
    from distillctl.plugins import registry

    reg = registry("teacher")
    entry, _ = reg.resolve(name)  # unknown names fail here, listing the valid ones
    weights = options.pop("weights", None)
    _check_options("teacher", name, entry, options)
    try:
        return reg.create(name, device="meta", **options), "meta"
    except Exception as exc:  # noqa: BLE001 - a plugin that cannot build on meta: fall back, say so
        reason = " ".join(str(exc).split())[:160]
        notes.append(f"teacher {name!r} cannot be built on the meta device ({type(exc).__name__}: {reason}); built on cpu with its weights")
    return reg.create(name, device="cpu", weights=weights, **options), "cpu"


def _probe_shapes(model: Any, teacher: Any, family: Any, paths: list[str], batch: int) -> tuple[dict[str, dict[str, int]], int | None]:
    """Run one forward with the family's dummy inputs on the model's device (meta: free) and record, per
    path, the output length, width and key/value length (cross-attention); plus the logits' numel."""
    import torch

    device = model_device(model)
    inputs = family.dummy_inputs(teacher, batch, device)
    modules = dict(model.named_modules())
    seen: dict[str, dict[str, int]] = {}

    def hook(path: str):
        def fn(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if out.ndim == 4:  # convolutional stage [B, D, H, W]: H*W tokens of width D
                tokens, width = int(out.shape[2] * out.shape[3]), int(out.shape[1])
            else:
                tokens, width = int(out.shape[1]), int(out.shape[-1])
            kv = kwargs.get("k_x")
            seen[path] = {"tokens": tokens, "width": width, "kv_tokens": int(kv.shape[1]) if kv is not None else tokens}

        return fn

    handles = [modules[p].register_forward_hook(hook(p), with_kwargs=True) for p in paths if p in modules]
    # Shapes of a stack's first layer do not depend on depth: run every probed ModuleList cut after the
    # last probed layer (a meta forward through all of coca-large's 72 blocks costs seconds), then put
    # the layers back.
    needed: dict[str, int] = {}
    for p in paths:
        name, _, idx = p.rpartition(".")
        if idx.isdigit():
            needed[name] = max(needed.get(name, 0), int(idx) + 1)
    saved: dict[str, tuple[Any, torch.nn.Module]] = {}
    for name, keep in needed.items():
        parent_name, _, attr = name.rpartition(".")
        parent = modules.get(parent_name) if parent_name else model
        stack = getattr(parent, attr, None)
        if isinstance(stack, torch.nn.ModuleList) and len(stack) > keep:
            saved[name] = (parent, stack)
            setattr(parent, attr, torch.nn.ModuleList(list(stack)[:keep]))
    try:
        with torch.no_grad():
            out = family.forward(model, inputs)
    finally:
        for name, (parent, stack) in saved.items():
            setattr(parent, name.rpartition(".")[2], stack)
        for hd in handles:
            hd.remove()
    logits = out.get("logits") if isinstance(out, dict) else None
    return seen, (int(logits.numel()) if logits is not None else None)


def _describe(model: Any, splitter: Any, teacher: Any, family: Any, batch: int) -> tuple[dict[str, Any], int | None]:
    modules = splitter.modules(model)
    probes = [s.layer(0) for m in modules for s in m.stacks if s.depth > 0]
    try:
        shapes, logits_per_sample = _probe_shapes(model, teacher, family, probes, 1)  # lengths do not depend on B
        logits_numel = logits_per_sample * batch if logits_per_sample else None
    except Exception:  # noqa: BLE001 - no dummy forward for this model: no activation estimate
        shapes, logits_numel = {}, None
    total = count_params(model)
    rows = []
    in_towers = 0
    owners: dict[str, int] = {}  # tower prefix -> modules using it (ViT block groups share one)
    for m in modules:
        for p in {s.name.split(".")[0] for s in m.stacks}:
            owners[p] = owners.get(p, 0) + 1
    for m in modules:
        prefixes = {s.name.split(".")[0] for s in m.stacks}
        tower = prefixes.pop() if len(prefixes) == 1 else ""
        tower = tower if owners.get(tower, 0) == 1 else ""
        tower_params = count_params(model, tower + ".") if tower else sum(
            count_params(model, s.layer(i) + ".") for s in m.stacks for i in range(s.depth))
        in_towers += tower_params
        stacks = []
        for s in m.stacks:
            layer0 = s.layer(0) if s.depth else None
            block = dict(model.named_modules()).get(layer0) if layer0 else None
            attn = getattr(block, "attn", None)
            width = shapes.get(layer0, {}).get("width", 0) if layer0 else 0
            stacks.append(
                {
                    "name": s.name,
                    "layers": s.depth,
                    "width": width,
                    "heads": int(getattr(attn, "num_heads", 0) or max(1, width // 64)),
                    "params": sum(count_params(model, s.layer(i) + ".") for i in range(s.depth)),
                    "tokens": shapes.get(layer0, {}).get("tokens") if layer0 else None,
                    "kv_tokens": shapes.get(layer0, {}).get("kv_tokens") if layer0 else None,
                    "cross_attention": bool(block is not None and hasattr(block, "ln_1_kv")),
                }
            )
        rows.append(
            {
                "name": m.name,
                "tower": tower,
                "layers": max((s["layers"] for s in stacks), default=0),
                "width": stacks[0]["width"] if stacks else 0,
                "params": tower_params,
                "block_params": sum(s["params"] for s in stacks),
                "stacks": stacks,
            }
        )
    return {"params": total, "other_params": total - in_towers, "modules": rows}, logits_numel


def _memory(student_desc: dict[str, Any], teacher_params: int, trainable: int, tapped: list[tuple[int, int]],
            logits_numel: int | None, batch: int, probe_batches: int = 2) -> dict[str, Any]:
    """The estimate in the module docstring; ``tapped`` = (tokens, width) of each teacher layer in a pair.

    ``probe_cache``: the probe set's cached teacher outputs (every paired teacher layer's hidden states
    and the caption logits, per probe batch of ``batch`` samples), on the device with
    ``train.probe_cache = "device"`` (the default); ``"host"`` keeps them in pinned host memory."""
    act_elems = 0
    unknown = False
    for m in student_desc["modules"]:
        for s in m["stacks"]:
            if s["tokens"] is None:
                unknown = True
                continue
            L, D, h, Lkv = s["tokens"], s["width"], s["heads"], s["kv_tokens"]
            per_block = batch * L * (16 * D + h * Lkv) + (2 * batch * Lkv * D if s["cross_attention"] else 0)
            act_elems += s["layers"] * per_block
    tapped_elems = sum(batch * L * D for L, D in tapped)
    logits_bytes = 4 * 4 * logits_numel if logits_numel else 0
    out: dict[str, Any] = {"batch_size": batch, "complete": not unknown, "probe_batches": probe_batches}
    for precision, b, tw in (("fp32", 4, 4), ("bf16", 2, 2)):
        parts = {
            "weights": tw * teacher_params + 4 * trainable,
            "grads": 4 * trainable,
            "optimizer": 8 * trainable,
            "activations": b * (act_elems + tapped_elems) + logits_bytes,
            "probe_cache": b * probe_batches * (tapped_elems + (logits_numel or 0)),
        }
        total = sum(parts.values())
        out[precision] = {**parts, "total": total, "total_gib": round(total / GIB, 2)}
    return out


def inspect_document(teacher_name: str, student_name: str | None, overrides: list[str], batch_size: int,
                     probe_batches: int = 2) -> dict[str, Any]:
    """The data behind the table and ``--json``."""
    from distillctl.layerwise import build_projections, layer_pairs
    from distillctl.plugins import registry

    tables = _split_overrides(overrides)
    t_opts = tables.get("teacher", {})
    s_opts = tables.get("student", {})
    teacher_name = str(t_opts.pop("name", teacher_name))
    student_name = s_opts.pop("name", student_name)
    if s_opts and student_name is None:
        raise UsageError("student.* options given without a student.", hint="Add --student NAME (e.g. layer-subset).")
    notes: list[str] = []
    teacher, built_on = _build_teacher(teacher_name, dict(t_opts), notes)
    sp_opts = tables.get("splitter", {})
    splitter_name = str(sp_opts.pop("name", "auto"))
    splitter_name = teacher.splitter if splitter_name == "auto" else splitter_name  # auto: the one the teacher names
    splitter = registry("splitter").create(splitter_name, **sp_opts)
    fam_opts = tables.get("family", {})
    family_name = str(fam_opts.pop("name", "auto"))
    family = registry("family").create(teacher.family if family_name == "auto" else family_name, **fam_opts)

    t_desc, t_logits = _describe(teacher.model, splitter, teacher, family, batch_size)
    doc: dict[str, Any] = {
        "teacher": {"name": teacher_name, "built_on": built_on, "weights": teacher.weights, **t_desc},
        "student": None,
        "compression": None,
        "layer_map": None,
        "projections": [],
        "memory": None,
        "counts": "module params = the whole tower (every parameter under its path prefix); block_params = stacked layers only",
        "notes": notes,
    }

    if student_name is not None:
        s_reg = registry("student")
        s_entry, _ = s_reg.resolve(student_name)
        _check_options("student", student_name, s_entry, s_opts)
        student = s_reg.create(student_name, teacher=teacher, splitter=splitter, **s_opts)
        splitter.check_compatible(teacher.model, student.model)
        s_desc, s_logits = _describe(student.model, splitter, teacher, family, batch_size)
        doc["student"] = {"name": student_name, "options": s_opts, "description": student.description, **s_desc}
        s_mods = {m["name"]: m for m in s_desc["modules"]}
        doc["compression"] = {
            "params": round(s_desc["params"] / t_desc["params"], 4),
            "modules": {
                m["name"]: round(s_mods[m["name"]]["params"] / m["params"], 4) if m["params"] else None
                for m in t_desc["modules"]
                if m["name"] in s_mods
            },
        }
        doc["layer_map"] = student.layer_map
        pairs = layer_pairs(splitter.modules(teacher.model), splitter.modules(student.model), student.layer_map)
        s_width = {s["name"]: s["width"] for m in s_desc["modules"] for s in m["stacks"]}
        t_width = {s["name"]: s["width"] for m in t_desc["modules"] for s in m["stacks"]}
        widths = {sp: (s_width[sp.rsplit(".", 1)[0]], t_width[tp.rsplit(".", 1)[0]]) for ps in pairs.values() for sp, tp in ps}
        teacher_of = {sp: tp for ps in pairs.values() for sp, tp in ps}
        proj = build_projections(widths)
        for sp, (ds, dt) in widths.items():
            if ds != dt:
                doc["projections"].append(
                    {"student_layer": sp, "teacher_layer": teacher_of[sp], "linear": [ds, dt], "params": ds * dt + dt}
                )
        trainable = s_desc["params"] + sum(p.numel() for p in proj.parameters())
        tokens = {s["name"]: s["tokens"] for m in t_desc["modules"] for s in m["stacks"]}
        tapped = [
            (tokens.get(tp.rsplit(".", 1)[0]) or 0, widths[sp][1]) for ps in pairs.values() for sp, tp in ps
        ]
        doc["memory"] = _memory(s_desc, t_desc["params"], trainable, tapped, s_logits, batch_size, probe_batches)
        doc["memory"]["student"] = student_name
    else:
        # no student: estimate for a full-depth copy of the teacher (layer-subset's default)
        tapped = [(s["tokens"] or 0, s["width"]) for m in t_desc["modules"] for s in m["stacks"] for _ in range(s["layers"])]
        doc["memory"] = _memory(t_desc, t_desc["params"], t_desc["params"], tapped, t_logits, batch_size, probe_batches)
        doc["memory"]["student"] = "none given: a full-depth copy of the teacher"
    doc["memory"]["formula"] = (
        "weights fp32 4*(P_t+P) | bf16 2*P_t+4*P; grads 4*P; AdamW 8*P; activations b*(sum over student blocks "
        "B*L*(16*D + h*L_kv) [+2*B*L_kv*D cross-attn] + sum over tapped teacher layers B*L*D_t) + 16*B*L_out*V "
        "(caption logits, fp32); probe_cache b*probe_batches*(sum over tapped teacher layers B*L*D_t + B*L_out*V) "
        "(0 on the device with train.probe_cache=host); P = student + projection params, b = 4 (fp32) or 2 (bf16)"
    )
    return doc


