"""One generic registry for every component kind (teachers, students, policies, ...).

``Registry[T]`` maps a name to a factory and remembers which plugin (distribution + version)
registered it. Duplicates fail naming both plugins; unknown names list the valid ones and
suggest the closest (tox / open_clip habit).

Names ending in ``:`` are *prefix* entries: ``open-clip:`` answers ``open-clip:coca_ViT-B-32``
and its factory receives ``variant="coca_ViT-B-32"``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from distillctl.errors import DuplicateComponentError, UnknownComponentError

T = TypeVar("T")


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` Did you mean 'x'?`` naming the closest candidate (difflib ratio), or "" when there is none.

    A close match (ratio >= 0.5) is preferred; otherwise the nearest name that shares anything with
    ``name`` is still offered, so a typo never leaves the user with only a list to read.
    """
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if not close:
        scored = [(difflib.SequenceMatcher(None, name, c).ratio(), -len(c), c) for c in candidates]
        close = [max(scored)[2]] if scored and max(scored)[0] > 0 else []
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Provenance:
    """Which plugin registered an entry."""

    plugin: str  # plugin name as pluggy knows it (entry-point name or module)
    distribution: str  # distribution name, e.g. "distillctl" or "distillctl-policy-greedy"
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


BUILTIN = Provenance("distillctl", "distillctl", "?")


@dataclass(frozen=True)
class Entry(Generic[T]):
    kind: str
    name: str
    factory: Callable[..., T]
    aliases: tuple[str, ...] = ()
    summary: str = ""
    provenance: Provenance = BUILTIN
    is_prefix: bool = False

    def options(self) -> dict[str, Any] | None:
        """Keyword options the factory takes (name -> default), or None if it takes **kwargs."""
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return None
        out: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                return None
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                out[p.name] = p.default
        return out


@dataclass
class Registry(Generic[T]):
    """name -> factory for one component kind."""

    kind: str  # singular, e.g. "policy"
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def register(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        aliases: tuple[str, ...] | list[str] = (),
        summary: str | None = None,
        provenance: Provenance = BUILTIN,
    ) -> Entry[T]:
        if not name or not isinstance(name, str):
            raise DuplicateComponentError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if summary is None:
            doc = inspect.getdoc(factory) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else ""
        entry = Entry(self.kind, name, factory, tuple(aliases), summary, provenance, name.endswith(":"))
        for key in (name, *entry.aliases):
            owner = self._owner(key)
            if owner is not None:
                raise DuplicateComponentError(
                    f"duplicate {self.kind} name {key!r}: registered by {owner.provenance.plugin} "
                    f"({owner.provenance}) and by {provenance.plugin} ({provenance}).",
                    hint="Uninstall one of the plugins or block one with DISTILLCTL_DISABLE_PLUGINS.",
                )
        self._entries[name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = name
        return entry

    def _owner(self, key: str) -> Entry[T] | None:
        if key in self._entries:
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        return None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name, missing_ok=True) is not None

    def resolve(self, name: str, *, missing_ok: bool = False) -> tuple[Entry[T], str | None] | None:
        """Find the entry for ``name``: (entry, variant) where variant is the prefix suffix."""
        entry = self._owner(name)
        if entry is not None:
            return entry, None
        if ":" in name:
            prefix, variant = name.split(":", 1)
            entry = self._owner(prefix + ":")
            if entry is not None and variant:
                return entry, variant
        if missing_ok:
            return None
        valid = self.names()
        hint = did_you_mean(name, valid + list(self._aliases))
        listing = ", ".join(valid) if valid else "(none registered)"
        raise UnknownComponentError(f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {listing}.")

    def get(self, name: str) -> Entry[T]:
        found = self.resolve(name)
        assert found is not None
        return found[0]

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Call the factory of ``name`` with ``kwargs`` (plus ``variant=`` for prefix entries)."""
        found = self.resolve(name)
        assert found is not None
        entry, variant = found
        if variant is not None:
            kwargs["variant"] = variant
        return entry.factory(**kwargs)
