"""Share a finished student: re-export it in another dtype, lay it out for the Hugging Face Hub, push it.

``export_student(RUN, OUT, dtype=...)`` (``distillctl export RUN --dtype fp16 --out DIR``) writes a
``distill --out``-style folder -- ``student.safetensors`` (every floating tensor cast; the metadata kept),
``open_clip_config.json``, and the run's ``run.toml`` / ``report.json`` -- that ``distillctl eval DIR`` scores
and ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads.

``export_student(..., hf=True)`` (``distillctl export RUN --hf``) writes open_clip's Hugging Face layout, the
one ``open_clip.create_model_and_transforms("hf-hub:ORG/NAME")`` reads (``factory.create_model`` ->
``_get_hf_config`` + ``download_pretrained_from_hf``, which tries ``open_clip_model.safetensors`` first):
``open_clip_model.safetensors``, ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``, and a
``distillctl`` block with the family, the tokenizer and the teacher), ``README.md`` (a model card generated
from ``report.json``) and ``run.toml`` (the resolved config: ``distillctl distill --preset run.toml``
repeats the run). No tokenizer files are written: open_clip gives a model whose ``text_cfg`` has no
``hf_tokenizer_name`` its own CLIP BPE ``SimpleTokenizer``, which is the tokenizer of every open_clip
teacher. A student of the bundled ``quickstart`` teacher uses the project's word tokenizer instead,
which open_clip does not know: model and transforms load through open_clip, text must be tokenised
with ``distillctl`` (the card says so and shows how).

``push(RUN, repo_id)`` uploads that layout with ``huggingface_hub`` (``create_repo`` + ``upload_folder``);
``dry_run`` lists the files and uploads nothing.

A finished student is never touched: every output goes to a temporary folder beside ``OUT`` that is
renamed into place once complete, and ``OUT`` may not be the run's own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillctl.errors import DistillctlError, UsageError

HF_WEIGHTS = "open_clip_model.safetensors"
HF_CONFIG = "open_clip_config.json"
STUDENT_WEIGHTS = "student.safetensors"
CARD = "README.md"
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(DistillctlError):
    """A student cannot be exported or pushed (bad folder, offline, not logged in, ...)."""


# ----------------------------------------------------------------------------------------- reading a run
def find_weights(run: Path) -> Path:
    """The student's weights in ``run``: a run or export folder (``student.safetensors``), a Hub layout
    (``open_clip_model.safetensors``), or the file itself."""
    run = Path(run).expanduser()
    if run.is_file():
        return run
    for name in (STUDENT_WEIGHTS, HF_WEIGHTS):
        if (run / name).is_file():
            return run / name
    if not run.exists():
        raise HubError(f"no such run: {run}; pass the --out folder of a distill run.")
    raise HubError(f"no {STUDENT_WEIGHTS} in {run}; pass the --out folder of a finished distill run.")


def read_student(run: Path) -> tuple[Path, dict[str, Any], dict[str, str], dict[str, Any]]:
    """``(weights file, state, metadata, model_config)``; a foreign or damaged file is one line."""
    from distillctl.export import read_export

    path = find_weights(run)
    state, meta, model_config = read_export(path)
    return path, state, meta, model_config


def _report(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------- writing
def _cast(state: dict[str, Any], dtype: str) -> dict[str, Any]:
    from distillctl.export import DTYPES

    target = DTYPES[dtype]
    return {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _save(state: dict[str, Any], path: Path, meta: dict[str, str], dtype: str) -> dict[str, Any]:
    """``export.save_weights`` (atomic, shareable file mode, sizes) on a state dict instead of a model."""
    from distillctl.export import save_weights

    class _State:  # save_weights reads model.state_dict()
        def state_dict(self) -> dict[str, Any]:
            return state

    keep = {k: v for k, v in meta.items() if k not in ("format", "dtype", "distillctl_version")}
    if "distillctl_version" in meta:
        keep["trained_with"] = f"distillctl {meta['distillctl_version']}"
    return save_weights(_State(), path, dtype=dtype, metadata={**keep, "source_dtype": meta.get("dtype", "fp32")})  # type: ignore[arg-type]


def open_clip_config(folder: Path, meta: dict[str, str], model_config: dict[str, Any]) -> dict[str, Any]:
    """The run's ``open_clip_config.json``, or the same document rebuilt from the weights' metadata."""
    try:
        return json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return {"model_cfg": model_config, "preprocess_cfg": json.loads(meta.get("preprocess_config", "{}")),
            "distillctl": {"family": meta.get("family", "coca"), "tokenizer": json.loads(meta.get("tokenizer_config", "{}")),
                           "teacher": meta.get("teacher", "")}}


@contextlib.contextmanager
def _staged(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` when the block succeeds (removed if it fails)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HubError(f"--out {out} is a file, not a folder; choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HubError(f"--out {out} is not empty; pass --overwrite to replace it or choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; an export is meant to be shared
    except OSError as exc:
        raise HubError(f"--out {out} cannot be written ({(exc.strerror or type(exc).__name__).lower()}); "
                       "choose another --out.") from None
    try:
        yield tmp
        if out.is_dir():  # --overwrite: the old folder goes only once the new one is complete
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.replace(old)
            tmp.replace(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_student(run: Path, out: Path, *, dtype: str = "fp32", hf: bool = False, repo_id: str | None = None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Re-export a finished student (``dtype``: fp32 | bf16 | fp16), as a run-style folder or (``hf``) the Hub
    layout with a model card; returns ``{"out", "files", "sizes"}``."""
    from distillctl.export import DTYPES

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}.")
    path, state, meta, model_config = read_student(run)
    folder = path.parent
    out = Path(out).expanduser()
    if out.resolve() == folder.resolve() or folder.resolve().is_relative_to(out.resolve()):
        raise UsageError(f"--out {out} holds the student being exported ({path}); choose another --out "
                         "(a finished student is never overwritten).")
    report = _report(folder)
    config_doc = open_clip_config(folder, meta, model_config)
    with _staged(out, overwrite=overwrite) as tmp:
        sizes = _save(_cast(state, dtype), tmp / (HF_WEIGHTS if hf else STUDENT_WEIGHTS), meta, dtype)
        sizes["student_file"] = str(out / Path(sizes["student_file"]).name)
        (tmp / HF_CONFIG).write_text(json.dumps(config_doc, indent=2), encoding="utf-8")
        if (folder / "run.toml").is_file():
            shutil.copyfile(folder / "run.toml", tmp / "run.toml")
        if hf:
            name = repo_id or out.name
            (tmp / CARD).write_text(model_card(report, meta, config_doc, repo_id=name, dtype=dtype, sizes=sizes),
                                    encoding="utf-8")
        elif report:
            shutil.copyfile(folder / "report.json", tmp / "report.json")
        files = sorted(p.name for p in tmp.iterdir())
    return {"out": str(out), "files": files, "sizes": sizes, "source": str(path)}


# ----------------------------------------------------------------------------------------- the model card
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_card(report: dict[str, Any], meta: dict[str, str], config_doc: dict[str, Any], *, repo_id: str, dtype: str,
               sizes: dict[str, Any]) -> str:
    """A Hugging Face model card (``README.md``) from ``report.json``: teacher, sizes, policy, arm pulls,
    the evaluation table, how to load it, and the command that reproduces the run."""
    from distillctl import __version__

    cfg = report.get("config") or {}
    train, policy = cfg.get("train", {}), cfg.get("policy", {})
    teacher = (report.get("teacher") or {}).get("name") or meta.get("teacher", "?")
    family = (config_doc.get("distillctl") or {}).get("family") or meta.get("family", "coca")
    tokenizer = (config_doc.get("distillctl") or {}).get("tokenizer") or {}
    s = report.get("sizes") or {}
    t_params, s_params = s.get("teacher_params"), s.get("student_params") or sizes.get("student_tensor_params")
    lines = [
        "---",
        "library_name: open_clip",
        "tags:",
        *(f"- {t}" for t in ("distillctl", "knowledge-distillation", family, "optima")),
        "license: other",
        "---",
        f"# {repo_id}",
        "",
        f"A student distilled from the teacher `{teacher}` with distillctl "
        f"{meta.get('distillctl_version', __version__)} by module-wise adaptive layerwise distillation (OPTIMA): "
        "in each episode a bandit policy picks which modules to distil.",
        "",
        "## Sizes",
        "",
        "| | parameters | file |",
        "|---|---|---|",
    ]
    if t_params:
        lines.append(f"| teacher `{teacher}` | {t_params / 1e6:.2f}M | |")
    if s_params:
        lines.append(f"| student | {s_params / 1e6:.2f}M | `{HF_WEIGHTS}`, {dtype}, {sizes['student_file_bytes'] / 1e6:.2f} MB |")
    if t_params and s_params:
        lines += ["", f"Compression: {t_params / s_params:.2f}x fewer parameters."]
    student = report.get("student") or {}
    if student.get("description"):
        lines += ["", f"Student: {student['description']}."]
    lines += ["", "## Training", ""]
    episodes = report.get("episodes") or []
    lines.append(f"- policy `{policy.get('name', meta.get('policy', '?'))}`, arm set `{policy.get('arms', meta.get('arms', '?'))}`")
    if train:
        lines.append(f"- {train.get('episodes')} episodes x {train.get('episode_steps')} steps = {report.get('steps', '?')} "
                     f"optimizer steps, batch {train.get('batch_size')}, lr {train.get('lr')}, seed {train.get('seed')}")
    if cfg.get("data"):
        lines.append(f"- data `{cfg['data'].get('name')}`")
    if report.get("arms"):
        lines += ["", "Arm pulls (episodes per arm) and mean reward (relative probe-loss decrement):", "",
                  "| arm | pulls | mean reward |", "|---|---|---|"]
        lines += [f"| {a['arm']} | {a['pulls']} | {_fmt(a['mean_reward']) if a.get('mean_reward') is not None else '-'} |"
                  for a in report["arms"]]
    if episodes:
        lines += ["", f"Probe loss: {_fmt(episodes[0]['probe_loss'])} after episode 1, {_fmt(episodes[-1]['probe_loss'])} "
                  f"after episode {len(episodes)}."]
    ev = report.get("eval") or {}
    if ev.get("student"):
        split = (cfg.get("eval") or {}).get("split", "test")
        lines += ["", "## Evaluation", "", f"On the `{split}` split of `{(cfg.get('data') or {}).get('name', '?')}` "
                  f"({(cfg.get('eval') or {}).get('samples', '?')} samples), measured by the run in fp32"
                  + (f" (this file is {dtype})" if dtype != "fp32" else "") + ":", ""]
        teacher_ev = ev.get("teacher") or {}
        lines += ["| metric | student | teacher | student / teacher |", "|---|---|---|---|"]
        for k, v in ev["student"].items():
            t = teacher_ev.get(k)
            ratio = f"{v / t:.0%}" if isinstance(t, (int, float)) and t else ""
            lines.append(f"| {k} | {_fmt(v)} | {_fmt(t) if t is not None else ''} | {ratio} |")
    lines += ["", "## Use", "", "```python", "import open_clip", "",
              f'model, _, preprocess = open_clip.create_model_and_transforms("hf-hub:{repo_id}")']
    if tokenizer.get("type") == "words":
        lines += ["```", "",
                  "This student keeps its teacher's own word tokenizer (the bundled distillctl `quickstart` teacher's "
                  f"{len(tokenizer.get('words', []))} words), which open_clip does not know: open_clip loads the "
                  "model and its transforms (equal to distillctl's for square images at the model's size), and text "
                  "is tokenised with distillctl (`pip install distillctl`):", "", "```python", "import json", "",
                  "from huggingface_hub import hf_hub_download", "from distillctl.quickstart import WordTokenizer", "",
                  f'doc = json.load(open(hf_hub_download("{repo_id}", "open_clip_config.json")))',
                  'cfg = doc["distillctl"]["tokenizer"]',
                  'tokenizer = WordTokenizer(cfg["words"], cfg["context_length"], cfg["vocab_size"])',
                  'text = tokenizer(["a red circle"])  # [1, context_length] ids for model.encode_text', "```", "",
                  f"`distillctl eval` scores it as is: download the folder (`hf download {repo_id} --local-dir DIR`) "
                  "and run `distillctl eval DIR`."]
    else:
        lines += [f'tokenizer = open_clip.get_tokenizer("hf-hub:{repo_id}")', "```"]
    lines += ["", "## Reproduce", "", "`run.toml` in this repository is the run's resolved config:", "", "```bash",
              f"hf download {repo_id} run.toml --local-dir .",
              f"distillctl distill --preset run.toml --out runs/{repo_id.split('/')[-1]}",
              "```"]
    if dtype != "fp32":
        lines += ["", f"then `distillctl export runs/{repo_id.split('/')[-1]} --dtype {dtype} --hf --out DIR` for this {dtype} file."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- push
def check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id or ""):
        raise UsageError(f"--repo-id {repo_id!r} is not a Hugging Face repo id; use ORG/NAME (letters, digits, '-', '_', '.').")


def is_hub_layout(folder: Path) -> bool:
    return folder.is_dir() and all((folder / n).is_file() for n in (HF_WEIGHTS, HF_CONFIG, CARD))


def stage_for_push(run: Path, repo_id: str, *, dtype: str = "fp32") -> tuple[Path, bool]:
    """The folder to upload: ``run`` itself when it already is a Hub layout (``export --hf``), else a temporary
    one built from the run (returns ``(folder, is_temporary)``)."""
    check_repo_id(repo_id)
    run = Path(run).expanduser()
    if is_hub_layout(run):
        return run, False
    tmp = Path(tempfile.mkdtemp(prefix="distillctl-push-"))
    try:
        export_student(run, tmp / "hub", dtype=dtype, hf=True, repo_id=repo_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp / "hub", True


def list_files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def push(folder: Path, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | None = None,
         commit_message: str | None = None) -> str:
    """Upload ``folder`` (a Hub layout) to ``repo_id`` with huggingface_hub; returns the commit URL."""
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        raise HubError("push needs huggingface_hub: pip install huggingface_hub.") from None
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (offline); unset it to upload, or use --dry-run "
                       "to list the files.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=commit_message or "Add a student distilled with distillctl")
    except Exception as exc:  # noqa: BLE001 - network, auth, permissions: one line with the fixes
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise HubError(f"push to {repo_id} failed: {text} (check the network; log in with `hf auth login` or pass "
                       "--token / set HF_TOKEN)") from None
    return str(getattr(info, "commit_url", info))


__all__ = ["HubError", "export_student", "find_weights", "is_hub_layout", "list_files", "model_card", "push",
           "read_student", "stage_for_push"]
