"""Module-local steps (``train.forward = "arm"``) and compute budgets (``train.budget = "flops"``).

Real runs on the bundled quickstart CoCa (smoke preset: batch 8, a few steps): what a module-local step
runs, what it trains, what it costs in FLOPs, and that a FLOPs budget ends deterministically and resumes
bit-exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distillctl import engine
from distillctl.cli import app
from distillctl.cli.distill_cmd import build_config
from distillctl.layerwise import HiddenStateTap, StopForward

runner = CliRunner()
NO_EVAL = "eval.evaluators=[]"


def smoke_cfg(*overrides: str) -> dict[str, Any]:
    cfg, _ = build_config("smoke", {}, list(overrides))
    return cfg


def built(*overrides: str, out: Path) -> engine.RunContext:
    """A run context through build_training (models, probe set, plans, FLOPs), without training."""
    ctx = engine.Run(smoke_cfg(NO_EVAL, *overrides), out).ctx
    engine.preflight(ctx)
    engine.build_models(ctx)
    engine.build_probe_set(ctx)
    engine.build_training(ctx)
    return ctx


def test_tap_stops_the_forward_after_the_last_tapped_layer() -> None:
    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(4)))
    ran: list[int] = []
    for i, layer in enumerate(model):
        layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    with HiddenStateTap(model, ["1"], stop=True) as tap:
        assert tap.run(model, torch.zeros(2, 4)) is None  # stopped: no output
    assert ran == [0, 1] and set(tap.outputs) == {"1"}
    ran.clear()
    with HiddenStateTap(model, ["1"]) as tap:  # without stop: the whole forward
        assert tap.run(model, torch.zeros(2, 4)).shape == (2, 4)
    assert ran == [0, 1, 2, 3]
    with pytest.raises(StopForward), HiddenStateTap(model, ["0"], stop=True):
        model(torch.zeros(2, 4))  # outside run(): the signal propagates


def _watch(ctx: engine.RunContext) -> tuple[set[str], list[Any]]:
    ran: set[str] = set()
    hooks = [getattr(m, part).register_forward_hook(lambda mod, a, o, p=part, w=who: ran.add(f"{w}.{p}"))
             for who, m in (("teacher", ctx.teacher_model), ("student", ctx.student_model))
             for part in ("visual", "text", "text_decoder")]
    hooks += [m.visual.attn_pool.register_forward_hook(lambda mod, a, o, w=who: ran.add(f"{w}.attn_pool"))
              for who, m in (("teacher", ctx.teacher_model), ("student", ctx.student_model))]
    return ran, hooks


def test_arm_forward_runs_only_the_parts_the_arm_needs(tmp_path: Path) -> None:
    ctx = built("train.forward=arm", out=tmp_path / "o")
    assert ctx.plans[("vision",)] is not None and ctx.plans[("text",)] is not None
    assert ctx.plans[("multimodal",)] is None  # needs both towers and the decoder: the full step
    ran, hooks = _watch(ctx)
    inputs = ctx.probe_batches[0].inputs
    arm = ("vision",)
    terms = engine.step_terms(ctx, inputs, arm, ctx.plans[arm], ctx.objective.student_paths(arm),
                              ctx.objective.teacher_paths(arm))
    for h in hooks:
        h.remove()
    # the image towers (with their pooler: the embedding is a KD term), no text tower, no decoder
    assert ran == {"teacher.visual", "student.visual", "teacher.attn_pool", "student.attn_pool"}, ran
    assert terms["task"].item() == 0.0 and terms["layerwise"].item() > 0
    assert set(k for k in terms if k.startswith("kd/")) == {"kd/image_cos"} and terms["kd"].item() > 0
    terms["total"].backward()
    grads = {n for n, p in ctx.student_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("visual.transformer.resblocks") for n in grads)
    assert not [n for n in grads if not n.startswith("visual.")], "only the image tower may get gradient"


def test_a_plan_without_terms_stops_after_the_last_hooked_layer(tmp_path: Path) -> None:
    from distillctl.interfaces import StepPlan

    ctx = built("train.forward=arm", out=tmp_path / "o")
    arm = ("vision",)
    plan = StepPlan(parts=("visual",), forward=lambda model, inputs: model.visual(inputs["image"]))  # terms=False
    ran, hooks = _watch(ctx)
    terms = engine.step_terms(ctx, ctx.probe_batches[0].inputs, arm, plan, ctx.objective.student_paths(arm),
                              ctx.objective.teacher_paths(arm))
    for h in hooks:
        h.remove()
    assert not ran, ran  # stopped inside the image towers: visual never returned, no pooler, no text, no decoder
    assert terms["task"].item() == 0.0 and terms["kd"].item() == 0.0 and terms["layerwise"].item() > 0
    terms["total"].backward()
    grads = {n for n, p in ctx.student_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and not [n for n in grads if n.startswith("visual.attn_pool") or not n.startswith("visual.")]


def test_arm_forward_gives_the_same_layerwise_terms_as_the_full_forward(tmp_path: Path) -> None:
    ctx = built("train.forward=arm", out=tmp_path / "o")
    inputs = ctx.probe_batches[0].inputs
    for arm in (("vision",), ("text",)):
        s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)
        with torch.no_grad():
            local = engine.step_terms(ctx, inputs, arm, ctx.plans[arm], s_paths, t_paths)
            full = engine.step_terms(ctx, inputs, arm, None, s_paths, t_paths)
        m = arm[0]
        assert torch.allclose(local[f"lw/{m}"], full[f"lw/{m}"], rtol=1e-5, atol=1e-7), m
        assert full["task"].item() > 0 and local["task"].item() == 0.0  # task terms need the full step


def test_flops_per_arm_are_counted_and_module_local_steps_cost_less(tmp_path: Path) -> None:
    ctx = built("train.forward=arm", out=tmp_path / "o")
    c = ctx.compute
    full, step = c["full_step_flops"], c["step_flops"]
    assert step["multimodal"] == full  # the full step
    assert 0 < step["text"] < step["vision"] < full
    # the vision arm runs the image towers only: their share of the model's FLOPs, not the whole model
    assert step["vision"] < 0.75 * full
    assert c["budget_flops"] == 3 * 2 * full  # smoke: 3 episodes x 2 steps of the full all-module step
    again = built("train.forward=full", out=tmp_path / "p").compute
    assert again["full_step_flops"] == full and set(again["step_flops"].values()) == {full}  # full forward: every arm


def test_counting_flops_changes_nothing_of_the_run(tmp_path: Path) -> None:
    """The regression test pins whole-run numbers; here: counting draws no random numbers, leaves no
    gradients and no changed weights or buffers behind."""
    ctx = built(out=tmp_path / "o")
    assert all(p.grad is None for p in ctx.student_model.parameters())
    before = {k: v.clone() for k, v in ctx.student_model.state_dict().items()}
    rng = torch.get_rng_state()
    engine.count_flops(ctx)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in [*ctx.student_model.parameters(), *ctx.projections.parameters()])
    assert all(torch.equal(before[k], v) for k, v in ctx.student_model.state_dict().items())


def test_a_flops_budget_ends_when_spent_and_buys_more_module_local_steps(tmp_path: Path) -> None:
    lwd = engine.run(smoke_cfg(NO_EVAL, "policy.name=fixed-order", "policy.arms=all", "train.budget=flops"), tmp_path / "a")
    assert lwd["steps"] == 6 and lwd["compute"]["spent_flops"] == lwd["compute"]["budget_flops"]  # 3 x 2 full steps
    local = engine.run(smoke_cfg(NO_EVAL, "policy.name=fixed-order", "policy.order=['vision','text']",
                                 "train.forward=arm", "train.budget=flops"), tmp_path / "b")
    c = local["compute"]
    assert c["budget_flops"] == lwd["compute"]["budget_flops"]  # equal compute
    assert local["steps"] > 6  # cheaper steps: more of them for the same FLOPs
    assert c["budget_flops"] <= c["spent_flops"] < c["budget_flops"] + 3 * max(c["step_flops"].values())
    assert sum(e["flops"] for e in local["episodes"]) == c["spent_flops"]
    assert [e["flops_total"] for e in local["episodes"]] == sorted(e["flops_total"] for e in local["episodes"])
    for e in local["episodes"]:
        assert e["flops"] == e["steps"] * c["step_flops"][e["arm"]]
        assert e["wall_s"] >= e["compute_s"] > 0
    # every episode spends what 2 full steps cost (episode_steps = 2), whatever its arm: 3 episodes in all
    assert len(local["episodes"]) == 3
    for e in local["episodes"][:-1]:  # (the budget may end inside the last one)
        assert e["steps"] == -(-2 * c["full_step_flops"] // c["step_flops"][e["arm"]])  # ceil
        assert e["flops"] >= 2 * c["full_step_flops"]
    # the learning rate follows the compute spent: the cosine reaches its floor at the end
    assert local["episodes"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    # loss.reward_loss = auto: module-local steps are rewarded on the total probe loss, full steps on the layerwise one
    assert local["config"]["loss"]["reward_loss"] == "total" and lwd["config"]["loss"]["reward_loss"] == "layerwise"
    for report, key in ((local, "total"), (lwd, "layerwise")):
        assert [e["probe_loss"] for e in report["episodes"]] == [e["probe"][key] for e in report["episodes"]]


def test_a_flops_budget_run_resumes_bit_exactly(tmp_path: Path) -> None:
    cfg = smoke_cfg(NO_EVAL, "train.forward=arm", "train.budget=flops", "train.checkpoint_every=1", "policy.window=3")
    straight = engine.run(cfg, tmp_path / "straight")

    class Crash(Exception):
        pass

    def crash(kind: str, payload: dict[str, Any]) -> None:
        if kind == "episode" and payload["episode"] == 3:
            raise Crash

    with pytest.raises(Crash):
        engine.run(cfg, tmp_path / "crashed", on_event=crash)
    resumed = engine.run(cfg, tmp_path / "crashed", resume=True)
    key = ("arm", "reward", "flops_total", "steps", "lr")
    assert [[e[k] for k in key] for e in resumed["episodes"]] == [[e[k] for k in key] for e in straight["episodes"]]
    a, b = load_file(tmp_path / "straight" / "student.safetensors"), load_file(tmp_path / "crashed" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_report_and_compare_show_compute(tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--policies", "fixed-order,fixed-order@all", "--seeds", "0",
                              "--budget", "flops", "--set", "train.forward=arm", "--set", NO_EVAL, "--out",
                              str(tmp_path / "c"), "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert summary["budget"] == "flops"
    rows = {r["label"]: r for r in summary["rows"]}
    budget = rows["fixed-order-all"]["flops"][0]
    assert rows["fixed-order"]["flops"][0] >= budget and rows["fixed-order"]["steps"][0] > rows["fixed-order-all"]["steps"][0]
    for r in rows.values():
        assert len(r["curves_flops"]) == 1 and r["curves_flops"][0][0] == 0
        assert len(r["curves_flops"][0]) == len(r["curves"][0])
    reached = [r for r in rows.values() if r["compute_to_target"][0] is not None]
    assert reached and all(0 < r["compute_to_target"][0] <= r["flops"][0] for r in reached)
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "equal training FLOPs" in md and "compute to" in md and "FLOP" in md
    html = (tmp_path / "c" / "compare.html").read_text()
    assert "Probe loss against training compute" in html
    run_html = (tmp_path / "c" / "fixed-order" / "seed0" / "report.html").read_text()
    assert "Probe loss against training compute" in run_html and "Wall time per episode" in run_html
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--budget", "hours", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--budget must be steps or flops" in res.output


def test_embedding_kd_weight_of_module_local_steps_is_a_family_option(tmp_path: Path) -> None:
    ctx = built("train.forward=arm", "family.embedding_kd_weight=0", out=tmp_path / "o")
    arm = ("vision",)
    terms = engine.step_terms(ctx, ctx.probe_batches[0].inputs, arm, ctx.plans[arm], ctx.objective.student_paths(arm),
                              ctx.objective.teacher_paths(arm))
    assert terms["kd"].item() == 0.0 and not [k for k in terms if k.startswith("kd/")]  # weight 0: no cosine term
    assert terms["layerwise"].item() > 0
