"""``distillctl export`` and ``distillctl push``: re-export a finished student (fp16 / bf16 / fp32), lay it out
for the Hugging Face Hub with a model card, and upload it (:mod:`distillctl.hub`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillctl.cli._common import console, echo_json


def register(app: typer.Typer) -> None:
    @app.command("export", rich_help_panel="Sharing")
    def export(
        run: Annotated[Path, typer.Argument(help="A finished distill --out folder (or an export of one).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (new, or replaced with --overwrite).")],
        dtype: Annotated[str, typer.Option(help="Dtype of the weights: fp32 | bf16 | fp16.")] = "fp32",
        hf: Annotated[bool, typer.Option("--hf", help="Write open_clip's Hugging Face layout (open_clip_model.safetensors, "
                                         "open_clip_config.json, README.md model card, run.toml).")] = False,
        repo_id: Annotated[str | None, typer.Option(help="ORG/NAME shown in the model card (--hf; default: the --out name).")] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace --out if it holds files.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Re-export a finished student: another dtype (fp16 halves the file), or the Hugging Face Hub layout."""
        from distillctl.hub import check_repo_id, export_student

        if repo_id is not None:
            check_repo_id(repo_id)
        result = export_student(run, out, dtype=dtype, hf=hf, repo_id=repo_id, overwrite=overwrite)
        if json_:
            echo_json(result)
            return
        sizes = result["sizes"]
        con = console()
        con.print(f"wrote {result['out']}: {', '.join(result['files'])}", highlight=False)
        con.print(f"{Path(sizes['student_file']).name}: {sizes['export_dtype']}, {sizes['student_file_bytes'] / 1e6:.2f} MB "
                  f"({sizes['student_tensor_params']:,} parameters x {sizes['student_file_bytes'] / sizes['student_tensor_params']:.2f} "
                  "bytes)", highlight=False)
        if hf:
            repo = repo_id or "ORG/NAME"
            con.print(f"share it: distillctl push {result['out']} --repo-id {repo}; then open_clip loads it with "
                      f"create_model_and_transforms(\"hf-hub:{repo}\")", highlight=False)
        else:
            con.print(f"open_clip loads it with create_model_and_transforms(\"local-dir:{result['out']}\")", highlight=False)
        con.print(f"score it: distillctl eval {result['out']}", highlight=False)

    @app.command("push", rich_help_panel="Sharing")
    def push(
        run: Annotated[Path, typer.Argument(help="A finished distill --out folder, or a folder written by `export --hf`.")],
        repo_id: Annotated[str, typer.Option("--repo-id", help="Hugging Face repo id: ORG/NAME.")],
        dtype: Annotated[str, typer.Option(help="Dtype of the uploaded weights (when RUN is a run folder): fp32 | bf16 | fp16.")] = "fp32",
        private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
        revision: Annotated[str | None, typer.Option(help="Branch to push to (default: main).")] = None,
        token: Annotated[str | None, typer.Option(help="Hugging Face token (default: HF_TOKEN or `hf auth login`).")] = None,
        message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files that would be uploaded; upload nothing.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Upload a student to the Hugging Face Hub in open_clip's layout, with a generated model card."""
        import shutil

        from distillctl import hub

        folder, temporary = hub.stage_for_push(run, repo_id, dtype=dtype)
        try:
            files = hub.list_files(folder)
            url = None if dry_run else hub.push(folder, repo_id, private=private, revision=revision, token=token,
                                                commit_message=message)
        finally:
            if temporary:
                shutil.rmtree(folder.parent, ignore_errors=True)
        if json_:
            echo_json({"repo_id": repo_id, "dry_run": dry_run, "files": [{"path": p, "bytes": n} for p, n in files],
                       "url": url})
            return
        con = console()
        head = f"would upload to https://huggingface.co/{repo_id}" if dry_run else f"uploaded to https://huggingface.co/{repo_id}"
        con.print(f"{head} ({len(files)} files):", highlight=False)
        for path, size in files:
            con.print(f"  {path}  {size / 1e6:.2f} MB" if size >= 10**5 else f"  {path}  {size:,} bytes", highlight=False)
        if url:
            con.print(url, highlight=False)
