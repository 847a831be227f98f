"""The one error boundary: library code raises these; the CLI prints one line and exits.

Everything that is *bad input* (an unknown name, a malformed preset, a missing file, weights
that do not fit) is a :class:`DistillctlError`. Anything else that escapes is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os


def debug_enabled() -> bool:
    """``DISTILLCTL_DEBUG=1``: let handled errors keep their traceback."""
    return os.environ.get("DISTILLCTL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


class DistillctlError(Exception):
    """A handled error: printed as one red line by the CLI, exit code ``exit_code``."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} {hint}")

    def __str__(self) -> str:  # one line, always
        text = self.message if not self.hint else f"{self.message} {self.hint}"
        return " ".join(text.split("\n"))


class UsageError(DistillctlError):
    """Bad command-line usage (exit code 2)."""

    exit_code = 2


class UnknownComponentError(DistillctlError):
    """A component name that no plugin registered."""


class DuplicateComponentError(DistillctlError):
    """Two plugins registered the same name for the same kind."""


class ComponentClashError(DuplicateComponentError):
    """A name that two (or more) plugins registered was asked for; the message says how to resolve it."""


class PluginError(DistillctlError):
    """A plugin failed to load, raised inside a hook, or its factory / object raised.

    Raised ``from`` the plugin's own exception, so ``DISTILLCTL_DEBUG=1`` shows where it happened.
    """


class ConfigError(DistillctlError):
    """A run config or preset is invalid. ``problems`` holds every ``section.key: message``."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid config: " + "; ".join(self.problems))


class DataError(DistillctlError):
    """A data source is unusable (missing, empty, wrong format)."""


class WeightsError(DistillctlError):
    """Weights could not be found, fetched or loaded into the architecture."""


class TrainingError(DistillctlError):
    """Training cannot go on (e.g. a non-finite loss)."""
