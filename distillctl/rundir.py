"""The run folder (``--out``): checked before anything is built, owned by one run, never lost.

``RunDir`` is the one place that decides what a run may do with its folder::

    rd = RunDir(out, overwrite=..., resume=...)
    rd.preflight()            # cheap, before any model is built; changes nothing on disk
    with rd.session():        # create OUT, lock it, move a replaced run aside
        ... train, checkpoint into rd.checkpoint_dir ...
        export student + reports
        rd.mark_exported()
    # success: the replaced run is deleted; failure: see below, then the exception goes on

What a folder holds (``classify``):

- a **finished run**: ``report.json`` or ``student.safetensors`` -- refused unless ``--overwrite``;
- an **unfinished run**: a checkpoint in ``checkpoints/`` and no ``report.json`` (a run killed
  between its export and its report is resumable too) -- refused unless ``--resume`` or ``--overwrite``;
- anything else (nothing, or only a ``run.toml`` of a run killed before its first checkpoint) is
  **not a run**: a new run may use the folder.

Ownership: ``session()`` takes ``fcntl.flock`` on ``OUT/.distillctl.lock`` (non-blocking). A second
run on the same folder is refused in one line naming the holder's pid; the OS drops the lock when
its process dies, so a crash (even SIGKILL) never leaves the folder stuck, and the lock file such a
crash leaves behind is removed by the next ``preflight`` (a refused run leaves the folder as the user
had it: no lock file).

Cleanup rule (DESIGN section 8): a failure before :meth:`RunDir.mark_exported` removes what this run
created -- the whole folder if it did not exist before, else only the files it wrote -- but keeps
``checkpoints/`` and ``run.toml`` when a checkpoint exists (a resumable run is of value). A failure
after ``mark_exported`` removes nothing. With ``--overwrite`` the previous run's files are moved to
``OUT/.previous/`` first and come back if the new run fails without leaving a checkpoint; they are
deleted when the new run succeeds (and kept while a resumable checkpoint of the new run exists, so a
``--resume`` that finishes is what finally replaces them). A run killed while any of this was going
on is repaired by the next run that takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from distillctl import checkpoint
from distillctl.errors import DistillctlError

FINISHED_MARKERS = ("report.json", "student.safetensors")
LOCK_NAME = ".distillctl.lock"
PREVIOUS = ".previous"  # the replaced run, while an --overwrite run is going on
INCOMING = ".previous-incoming"  # files being moved aside (a kill mid-move is undone on the next start)
MIN_FREE_BYTES = 64 * 2**20  # below this a run cannot even write a checkpoint of the tiniest model


class RunDirError(DistillctlError):
    """The ``--out`` folder cannot be used (unwritable, in use, or holds a run this command would lose)."""


class NothingToResume(RunDirError):
    """``--resume`` on a folder without a checkpoint (a usage error: exit code 2)."""

    exit_code = 2


class RunDir:
    """The ``--out`` folder of one run; see the module docstring."""

    def __init__(self, out: Path, *, overwrite: bool = False, resume: bool = False,
                 min_free_bytes: int = MIN_FREE_BYTES) -> None:
        if overwrite and resume:
            raise RunDirError("--overwrite and --resume exclude each other: resume continues a run, overwrite replaces it.")
        self.out = Path(out)
        self.overwrite, self.resume = overwrite, resume
        self.min_free_bytes = min_free_bytes
        self.exported = False
        self._created = False
        self._before: set[str] = set()
        self.keep_on_failure: set[str] = set()  # top-level names a failed run keeps (its trackers' local logs)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    # ------------------------------------------------------------------ preflight
    def preflight(self) -> None:
        """Fail now, in one line, if this run cannot use ``out``. Changes nothing on disk but removing a stale
        ``.distillctl.lock`` (one no process holds: a killed run's)."""
        out = self.out
        # 1. the path: a folder, or creatable below its nearest existing ancestor
        anc = out
        while not _exists(anc):
            if anc.parent == anc:
                break
            anc = anc.parent
        if _exists(anc) and not anc.is_dir():
            if anc == out:
                raise RunDirError(f"--out {out} is a file, not a folder; choose another --out.")
            raise RunDirError(f"--out {out} cannot be created: {anc} is a file, not a folder; choose another --out.")
        # 2. writable: create and delete a probe file where the run will write first
        try:
            fd, probe = tempfile.mkstemp(prefix=".distillctl-probe-", dir=anc)
            try:
                os.write(fd, b"distillctl write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise RunDirError(f"--out {out} cannot be written ({_why(exc)} in {anc}); choose another --out.") from None
        # 3. free space
        try:
            free = shutil.disk_usage(anc).free
        except OSError:
            free = None
        if free is not None and free < self.min_free_bytes:
            raise RunDirError(f"--out {out}: only {free / 2**20:.0f} MiB free on its disk "
                              f"(need at least {self.min_free_bytes / 2**20:.0f} MiB); free space or choose another --out.")
        # 4. another run owns the folder (a lock probe; creates nothing). A lock file nobody holds was left by
        # a killed run: it is ours, not the user's, so it goes (a refused run then leaves the folder as the
        # user had it, and an accepted one creates it again)
        holder = _lock_holder(out / LOCK_NAME, remove_stale=True)
        if holder is not None:
            raise RunDirError(_in_use(out, holder))
        # 5. what the folder holds, and whether this command may use it
        self._check_contents()

    def classify(self) -> str:
        """``"finished"``, ``"unfinished"`` (a checkpoint to resume) or ``"empty"`` (not a run)."""
        out = self.out
        if not out.is_dir():
            return "empty"
        if (out / "report.json").exists():
            return "finished"
        if checkpoint.exists(self.checkpoint_dir):  # even beside a student: killed between export and report
            return "unfinished"
        if (out / "student.safetensors").exists():
            return "finished"
        # an --overwrite run that was killed before it finished: the replaced run is still ours to keep
        for aside in (out / PREVIOUS, out / INCOMING):
            if any((aside / m).exists() for m in FINISHED_MARKERS):
                return "finished"
        return "empty"

    def _check_contents(self) -> None:
        out, kind = self.out, self.classify()
        if self.resume:
            if kind == "finished":
                raise NothingToResume(f"--out {out} holds a finished run: nothing to resume.")
            if kind != "unfinished":
                raise NothingToResume(f"nothing to resume in {out}: no checkpoint in {self.checkpoint_dir} "
                                  "(the run stopped before its first checkpoint; start it again without --resume).")
            return
        if self.overwrite:
            return
        if kind == "finished":
            raise RunDirError(f"--out {out} already holds a run; pass --overwrite to replace it or choose another --out.")
        if kind == "unfinished":
            raise RunDirError(f"--out {out} holds an unfinished run; pass --resume to continue it, "
                              "--overwrite to replace it, or choose another --out.")

    # ------------------------------------------------------------------ session
    @contextlib.contextmanager
    def session(self) -> Iterator[RunDir]:
        """Own ``out`` for the duration of the run; on failure apply the cleanup rule and re-raise."""
        existed = self.out.is_dir()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"--out {self.out} cannot be created ({_why(exc)}); choose another --out.") from None
        self._created = not existed
        lock_fd = self._lock()
        try:
            try:
                self._repair()
                self._check_contents()  # again, under the lock: another run may have finished meanwhile
                if self.overwrite:
                    self._move_previous_aside()
                self._before = {p.name for p in self.out.iterdir()}
            except BaseException:
                self._created = False  # never delete what another run may be about to use
                raise
            try:
                yield self
            except BaseException:
                self._on_failure()
                raise
            self._on_success()
        finally:
            self._unlock(lock_fd)

    def mark_exported(self) -> None:
        """From now on a failure removes nothing: the student and report are of value."""
        self.exported = True

    # ------------------------------------------------------------------ lock
    def _lock(self) -> int:
        import fcntl

        path = self.out / LOCK_NAME
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunDirError(f"--out {self.out} cannot be written ({_why(exc)}); choose another --out.") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise RunDirError(_in_use(self.out, holder)) from None
            # the holder before us may have removed the file as it finished: lock the file that is there now
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)
        raise RunDirError(f"--out {self.out}: could not lock {path}; choose another --out.")

    def _unlock(self, fd: int) -> None:
        path = self.out / LOCK_NAME
        with contextlib.suppress(OSError):
            if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()  # while still locked: the next run re-checks the inode
        with contextlib.suppress(OSError):
            os.close(fd)
        if self._created and self.out.is_dir() and not any(self.out.iterdir()):
            with contextlib.suppress(OSError):
                self.out.rmdir()

    # ------------------------------------------------------------------ moving a replaced run aside
    def _entries(self) -> list[Path]:
        skip = {LOCK_NAME, PREVIOUS, INCOMING}
        return [p for p in self.out.iterdir() if p.name not in skip]

    def _repair(self) -> None:
        """Undo what a killed run left half done (we hold the lock: nobody else is using the folder)."""
        incoming, previous = self.out / INCOMING, self.out / PREVIOUS
        if incoming.is_dir():  # killed while moving a run aside: put it back
            for p in incoming.iterdir():
                if not (self.out / p.name).exists():
                    os.replace(p, self.out / p.name)
            shutil.rmtree(incoming, ignore_errors=True)
        if previous.is_dir():
            top_finished = any((self.out / m).exists() for m in FINISHED_MARKERS)
            if top_finished:  # the replacing run got as far as its export: it won
                shutil.rmtree(previous, ignore_errors=True)
            elif not checkpoint.exists(self.checkpoint_dir):  # it left nothing of value: restore the old run
                self._restore_previous()
            # else: the replacing run is resumable; the old run stays aside until it finishes

    def _move_previous_aside(self) -> None:
        previous, incoming = self.out / PREVIOUS, self.out / INCOMING
        entries = self._entries()
        if previous.is_dir():
            # an earlier --overwrite was interrupted: .previous holds the finished run, the top level only
            # that interrupted attempt (which this --overwrite replaces)
            for p in entries:
                _remove(p)
            return
        if not entries:
            return
        incoming.mkdir()
        for p in entries:
            os.replace(p, incoming / p.name)
        os.replace(incoming, previous)

    def _restore_previous(self) -> None:
        previous = self.out / PREVIOUS
        for p in self._entries():
            _remove(p)
        for p in previous.iterdir():
            os.replace(p, self.out / p.name)
        shutil.rmtree(previous, ignore_errors=True)

    # ------------------------------------------------------------------ outcome
    def _on_success(self) -> None:
        shutil.rmtree(self.out / PREVIOUS, ignore_errors=True)

    def _on_failure(self) -> None:
        if self.exported:  # nothing of value is removed after export; the run it replaced has been replaced
            shutil.rmtree(self.out / PREVIOUS, ignore_errors=True)
            return
        keep_ckpt = checkpoint.exists(self.checkpoint_dir)
        keep = {LOCK_NAME, PREVIOUS, INCOMING, *self.keep_on_failure}
        if keep_ckpt:
            keep |= {self.checkpoint_dir.name, "run.toml"}  # what --resume needs
        for p in self.out.iterdir():
            if p.name in keep:
                continue
            if self._created or p.name not in self._before:
                _remove(p)
        if not keep_ckpt and (self.out / PREVIOUS).is_dir():
            self._restore_previous()


# --------------------------------------------------------------------------- helpers
def _exists(p: Path) -> bool:
    try:
        p.stat()
        return True
    except OSError:
        return False


def _why(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return (exc.strerror or type(exc).__name__).lower()


def _in_use(out: Path, holder: str) -> str:
    who = f"pid {holder}" if holder else "another process"
    return f"--out {out} is in use by another distillctl run ({who}); wait for it to end or choose another --out."


def _lock_holder(path: Path, *, remove_stale: bool = False) -> str | None:
    """The pid (or "") of the process that holds ``path`` locked, None when nobody does.

    ``remove_stale``: a lock file nobody holds is removed, under an exclusive lock and only if it is still
    the file at ``path`` (the same inode check :meth:`RunDir._lock` makes, so a run starting meanwhile
    locks a fresh file)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if remove_stale else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        return holder
    if remove_stale:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()  # while locked, like the holder does as it finishes
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


__all__ = ["FINISHED_MARKERS", "NothingToResume", "RunDir", "RunDirError"]
