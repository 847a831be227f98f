"""One generic registry for every component kind (teachers, students, policies, ...).

``Registry[T]`` maps a name to a factory and remembers which plugin (distribution + version)
registered it. Unknown names list the valid ones (aliases included) and suggest a close one
(tox / open_clip habit). Two plugins claiming one name is a *clash*: the plugin manager records it
(``on_clash="record"``) so that every other name keeps working, and only resolving the clashing
name fails, naming both plugins and the exact ``DISTILLCTL_DISABLE_PLUGINS=...`` that resolves it.

Every call of plugin code goes through :func:`call_plugin` (``Registry.create`` does it for the
factory): an exception from a plugin becomes one :class:`PluginError` line naming the component,
the plugin and its version; a ``DistillctlError`` raised by the plugin passes through unchanged.

Names ending in ``:`` are *prefix* entries: ``open-clip:`` answers ``open-clip:coca_ViT-B-32``
and its factory receives ``variant="coca_ViT-B-32"``.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import difflib
import inspect
import os
import pathlib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from distillctl.errors import (
    ComponentClashError,
    DistillctlError,
    DuplicateComponentError,
    PluginError,
    UnknownComponentError,
)

T = TypeVar("T")
R = TypeVar("R")

DISABLE_ENV = "DISTILLCTL_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "distillctl"


def did_you_mean(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` naming the closest candidate, or "" when none is close enough.

    Closeness is difflib's ratio (tox uses ``get_close_matches`` the same way). Below ``cutoff``
    (difflib's own default, 0.6) a suggestion is noise: ``nosuch`` is not a misspelt ``smoke``, and
    the caller's list of valid names serves the user better than a guess.
    """
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Provenance:
    """Which plugin registered an entry."""

    plugin: str  # plugin name as pluggy knows it (entry-point name or module)
    distribution: str  # distribution name, e.g. "distillctl" or "distillctl-policy-greedy"
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


BUILTIN = Provenance("distillctl", BUILTIN_DISTRIBUTION, "?")


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

    def required_options(self, engine: Iterable[str] = ()) -> list[str]:
        """Keyword parameters without a default, less those the engine passes itself (``engine``):
        options a user must set (``[policy] threshold = 0.5``)."""
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return []
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        skip = set(engine)
        return [p.name for p in sig.parameters.values()
                if p.kind in kinds and p.default is inspect.Parameter.empty and p.name not in skip]

    def option_types(self) -> dict[str, Any]:
        """The factory's keyword parameters -> their annotations, resolved where possible.

        Factories use ``from __future__ import annotations``, so annotations are strings: they are
        resolved like ``typing.get_type_hints`` does, one parameter at a time so that one
        unresolvable name (a type imported under ``TYPE_CHECKING``) leaves the others checked.
        Parameters without an annotation, or whose annotation cannot be resolved, are left out.
        """
        return _option_types(self.factory)

    def check_option(self, key: str, value: Any) -> str | None:
        """``None`` when ``value`` suits the annotation of the factory's ``key`` parameter, else
        what is wrong (``expected integer, got str 'abc'``). Unknown annotations accept anything."""
        tp = self.option_types().get(key)
        if tp is None or _conforms(value, tp) is not False:
            return None
        return f"expected {_describe(tp)}, got {_value_label(value)}"

    def describe(self, name: str | None = None) -> str:
        """``policy 'greedy' from plugin distillctl-policy-greedy 0.3.1`` or ``policy 'optima' (built-in)``."""
        shown = name or self.name
        if self.provenance.builtin:
            return f"{self.kind} {shown!r} (built-in)"
        return f"{self.kind} {shown!r} from plugin {self.provenance}"

    def call(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``call_plugin(self, fn, *args, **kwargs)``."""
        return call_plugin(self, fn, *args, **kwargs)


# ---------------------------------------------------------------- calling plugin code
@contextlib.contextmanager
def plugin_errors(entry: Entry[Any], action: str | None = None, *, name: str | None = None) -> Iterator[None]:
    """Run a block of plugin code so that its failure is one line naming the plugin.

    A :class:`DistillctlError` raised inside passes through unchanged (it already is one handled
    line). Any other ``Exception`` becomes a :class:`PluginError`, ``raise ... from`` the original
    (``DISTILLCTL_DEBUG=1`` shows its traceback)::

        teacher 'foo' from plugin my-dist 1.2.0 failed: ValueError: bad width
        policy 'greedy' from plugin distillctl-policy-greedy 0.3.1 failed in select: KeyError: 'x'
        policy 'optima' (built-in) failed in update: ZeroDivisionError: division by zero

    ``action`` names the method (omitted for the factory); ``name`` is the name the user asked for
    (an alias, ``open-clip:VARIANT``), default the entry's name.
    """
    try:
        yield
    except DistillctlError:
        raise
    except Exception as exc:
        raise _plugin_error(entry, action, name, exc) from exc


def _plugin_error(entry: Entry[Any], action: str | None, name: str | None, exc: BaseException) -> PluginError:
    where = f" in {action}" if action else ""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    message = " ".join(f"{entry.describe(name)} failed{where}: {detail}".split())
    return PluginError(message, hint="(DISTILLCTL_DEBUG=1 shows the traceback.)")


def call_plugin(entry: Entry[Any], fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Call ``fn(*args, **kwargs)``, a factory or a method of an object a plugin built, under
    :func:`plugin_errors`: any exception but a ``DistillctlError`` becomes one ``PluginError`` line
    naming ``entry``'s kind, name, plugin and version, and the method (``fn.__name__``)::

        policy = registry("policy").create(name, arms=arms, seed=seed)   # the factory is wrapped
        entry = registry("policy").get(name)
        arm = call_plugin(entry, policy.select)                            # "... failed in select: ..."
    """
    action = None if fn is entry.factory else getattr(fn, "__name__", None)
    if action is not None and action.startswith("<"):  # <lambda>, <locals>: no useful name
        action = None
    with plugin_errors(entry, action):
        return fn(*args, **kwargs)


class Guarded:
    """A plugin's object whose methods run under :func:`plugin_errors`: ``guarded.select(3)`` fails as
    ``policy 'greedy' from plugin ... failed in select: ...``. Attributes that are not methods pass through.
    For pure-Python objects called from a command that knows no better place (``simulate``'s policies);
    each method's wrapper is made once and kept on the instance, so a call costs one ``try`` more
    (``simulate --suite`` makes millions)."""

    def __init__(self, entry: Entry[Any], obj: Any, name: str | None = None) -> None:
        object.__setattr__(self, "_entry", entry)
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:  # only for names not on the instance yet
        entry, name = self._entry, self._name
        with plugin_errors(entry, attr, name=name):  # a property of the plugin's object may raise too
            value = getattr(self._obj, attr)
        if not callable(value) or attr.startswith("__"):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except DistillctlError:
                raise
            except Exception as exc:
                raise _plugin_error(entry, attr, name, exc) from exc

        object.__setattr__(self, attr, call)  # found directly from now on
        return call

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._obj, attr, value)

    def __repr__(self) -> str:
        return f"Guarded({self._obj!r})"


# ---------------------------------------------------------------- clashes
def disable_value(plugins: list[str]) -> str:
    """``DISTILLCTL_DISABLE_PLUGINS=a,b``: what is already blocked plus ``plugins``."""
    current = [p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()]
    return f"{DISABLE_ENV}=" + ",".join(dict.fromkeys([*current, *plugins]))


@dataclass(frozen=True)
class Clash:
    """Names (or aliases) that the same registrations all claim: usually one name, or a name and its aliases."""

    kind: str
    names: tuple[str, ...]
    entries: tuple[Entry[Any], ...]  # registration order: built-ins, entry points, extras

    def plugins(self) -> list[Provenance]:
        return list(dict.fromkeys(e.provenance for e in self.entries))

    def fixes(self) -> list[tuple[str, Provenance]]:
        """``(DISTILLCTL_DISABLE_PLUGINS=..., provenance kept)`` for each way out, first-registered kept first.

        Built-in plugins are never offered for blocking (that would drop every built-in of the kind).
        """
        claimers = self.plugins()
        out = []
        for kept in claimers:
            others = [p for p in claimers if p != kept]
            if others and not any(p.builtin for p in others):
                out.append((disable_value([p.plugin for p in others]), kept))
        return out

    def line(self) -> str:
        claimers = self.plugins()
        who = [f"distillctl {p.version} (built-in)" if p.builtin else f"{p.plugin} ({p})" for p in claimers]
        what = f"{self.kind} name{'s' if len(self.names) > 1 else ''} {', '.join(map(repr, self.names))}"
        if len(claimers) == 1:
            head = f"duplicate {what}: registered twice by {who[0]}."
        else:
            head = f"duplicate {what}: registered by " + " and by ".join(who) + "."
        fixes = self.fixes()
        if fixes:
            ways = [f"{value} to keep " + ("the built-in" if kept.builtin else f"{kept.plugin}'s") for value, kept in fixes]
            return f"{head} Set " + ", or ".join(ways) + "."
        third_party = [p for p in claimers if not p.builtin]
        if third_party:
            return f"{head} Set {disable_value([p.plugin for p in third_party])} to drop it and report the bug to {third_party[0].distribution}."
        return f"{head} This is a bug in distillctl; please report it."


@dataclass(frozen=True)
class Shadow:
    """A third-party registration of names a built-in already has: the built-in keeps them (for everyone),
    the plugin's component stays usable under ``alias`` (``PLUGIN/NAME``) when its own name was taken."""

    kind: str
    names: tuple[str, ...]  # the names / aliases the built-in kept
    entry: Entry[Any]  # the plugin's registration (without the names it lost)
    builtin: Entry[Any]
    alias: str | None  # ``PLUGIN/NAME``: how to ask for the plugin's component; None when only aliases were lost

    def line(self) -> str:
        what = f"{self.kind} {'names' if len(self.names) > 1 else 'name'} {', '.join(map(repr, self.names))}"
        head = (f"{what} of plugin {self.entry.provenance.plugin} ({self.entry.provenance}) "
                f"{'are' if len(self.names) > 1 else 'is'} shadowed by the built-in {self.kind} {self.builtin.name!r}, "
                "which keeps working.")
        if self.alias is not None:
            return f"{head} Use the plugin's as {self.alias!r} (or ask its author to rename it)."
        return f"{head} The plugin's {self.kind} stays available as {self.entry.name!r}."


# ---------------------------------------------------------------- option types
def _option_types(factory: Callable[..., Any]) -> dict[str, Any]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    target = inspect.unwrap(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - one unresolvable name: resolve the others one by one
        hints = {}
        namespace = dict(getattr(target, "__globals__", {}))
        for p in sig.parameters.values():
            if isinstance(p.annotation, str):
                try:
                    hints[p.name] = eval(p.annotation, namespace)  # noqa: S307 - the factory's own annotation
                except Exception:  # noqa: BLE001 - unresolvable: accept anything
                    continue
            elif p.annotation is not inspect.Parameter.empty:
                hints[p.name] = p.annotation
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: hints[p.name] for p in sig.parameters.values() if p.kind in kinds and p.name in hints}


_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)
_SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection,
              cabc.Set, cabc.MutableSet)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def _conforms(value: Any, tp: Any) -> bool | None:
    """True / False when ``value`` does / does not fit ``tp``; None when ``tp`` says nothing we can check."""
    if tp is Any or tp is object or isinstance(tp, (str, TypeVar, typing.ForwardRef)):
        return None
    if tp is None or tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _conforms(value, args[0])
    if origin in _UNION_TYPES:
        results = [_conforms(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (pathlib.Path, pathlib.PurePath, os.PathLike) or origin is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    container = origin or tp
    if container in _SEQUENCES:
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple, set, frozenset)):
            return False
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False
            results = [_conforms(v, a) for v, a in zip(value, args, strict=True)]
        else:
            item = args[0] if args else Any
            results = [_conforms(v, item) for v in value]
        return False if any(r is False for r in results) else True
    if container in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            results = [_conforms(k, args[0]) for k in value] + [_conforms(v, args[1]) for v in value.values()]
            if any(r is False for r in results):
                return False
        return True
    if inspect.isclass(tp):  # some other class: say yes when it is one, else leave it to the factory
        try:
            return True if isinstance(value, tp) else None
        except TypeError:  # a Protocol that is not runtime_checkable, a generic alias ...: nothing to check
            return None
    return None


_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table"}


def _describe(tp: Any, *, plural: bool = False) -> str:
    """``integer``, ``list of strings``, ``one of 'a', 'b'``, ``integer or string`` ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _describe(args[0], plural=plural)
    if origin in _UNION_TYPES:
        parts = [_describe(a, plural=plural) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    container = origin or tp
    if container in _SEQUENCES:
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            text = f"list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
        else:
            text = f"list of {_describe(args[0], plural=True)}" if args and args[0] is not Any else "list"
        return text + ("s" if plural else "")
    if container in _MAPPINGS:
        return "tables" if plural else "table"
    if tp in (pathlib.Path, pathlib.PurePath, os.PathLike) or origin is os.PathLike:
        return "paths" if plural else "path"
    name = _NAMES.get(tp) or getattr(tp, "__name__", None) or str(tp)
    return name + ("s" if plural else "")


def _value_label(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# ---------------------------------------------------------------- the registry
@dataclass
class Registry(Generic[T]):
    """name -> factory for one component kind."""

    kind: str  # singular, e.g. "policy"
    _entries: list[Entry[T]] = field(default_factory=list)  # every registration, in order
    _keys: dict[str, list[Entry[T]]] = field(default_factory=dict)  # name or alias -> entries claiming it
    _shadowed: list[Shadow] = field(default_factory=list)  # plugins' registrations of built-in names

    def register(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        aliases: tuple[str, ...] | list[str] = (),
        summary: str | None = None,
        provenance: Provenance = BUILTIN,
        on_clash: Literal["raise", "record"] = "raise",
    ) -> Entry[T]:
        """Add ``name`` (and its aliases). A built-in's name or alias is never taken over: a plugin's
        registration of it is *shadowed* (:meth:`shadowed`), the built-in keeps the name and the plugin's
        component is registered as ``PLUGIN/NAME`` instead. Any other name or alias already claimed is a
        clash: ``on_clash="raise"`` raises :class:`DuplicateComponentError` and registers nothing;
        ``"record"`` (what the plugin manager uses) keeps both, lists both, and makes only that name fail
        to resolve."""
        if not name or not isinstance(name, str):
            raise DuplicateComponentError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if summary is None:
            doc = inspect.getdoc(factory) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else ""
        entry = Entry(self.kind, name, factory, tuple(aliases), summary, provenance, name.endswith(":"))
        keys = list(dict.fromkeys((name, *entry.aliases)))
        if not provenance.builtin:  # a built-in name is never taken over: the built-in keeps it for everyone
            taken = [k for k in keys if any(e.provenance.builtin for e in self._keys.get(k, ()))]
            if taken:
                builtin = next(e for e in self._keys[taken[0]] if e.provenance.builtin)
                alias = f"{provenance.plugin}/{name}" if name in taken else None
                kept = tuple(a for a in entry.aliases if a not in taken) + ((alias,) if alias else ())
                entry = replace(entry, aliases=kept)
                keys = [k for k in keys if k not in taken] + ([alias] if alias else [])
                self._shadowed.append(Shadow(self.kind, tuple(taken), entry, builtin, alias))
        if on_clash == "raise":
            for key in keys:
                if key in self._keys:
                    raise DuplicateComponentError(Clash(self.kind, (key,), (*self._keys[key], entry)).line())
        self._entries.append(entry)
        for key in keys:
            self._keys.setdefault(key, []).append(entry)
        return entry

    def shadowed(self) -> list[Shadow]:
        """Plugins' registrations of names a built-in has, in registration order (the built-in kept them)."""
        return list(self._shadowed)

    def clashes(self) -> list[Clash]:
        """Every name or alias more than one registration claims, one :class:`Clash` per set of
        claimants (a name and its aliases clash together), in registration order."""
        grouped: dict[tuple[int, ...], list[str]] = {}
        claimants: dict[tuple[int, ...], tuple[Entry[T], ...]] = {}
        for key, claimed in self._keys.items():
            if len(claimed) > 1:
                ids = tuple(id(e) for e in claimed)
                grouped.setdefault(ids, []).append(key)
                claimants[ids] = tuple(claimed)
        return [Clash(self.kind, tuple(keys), claimants[ids]) for ids, keys in grouped.items()]

    def _owner(self, key: str) -> Entry[T] | None:
        claimed = self._keys.get(key)
        if not claimed:
            return None
        if len(claimed) > 1:
            clash = next(c for c in self.clashes() if key in c.names)
            raise ComponentClashError(f"cannot use {self.kind} {key!r}: {clash.line()}")
        return claimed[0]

    def key_of(self, entry: Entry[T]) -> str:
        """The name a user types for ``entry``: its own, or ``PLUGIN/NAME`` when a built-in shadows it."""
        shadow = next((sh for sh in self._shadowed if sh.entry is entry and sh.alias), None)
        return shadow.alias if shadow is not None and shadow.alias else entry.name

    def names(self) -> list[str]:
        return sorted({e.name for e in self._entries})

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries, key=lambda e: e.name))  # stable: clashing entries in registration order

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self.resolve(name, missing_ok=True) is not None
        except ComponentClashError:
            return True  # registered (twice): the name exists, resolving it explains the clash

    def listing(self) -> str:
        """``fixed-order (alias round-robin), optima, uniform (alias random)``: every name a user may type."""
        parts = []
        for name in self.names():
            aliases = list(dict.fromkeys(a for e in self._entries if e.name == name for a in e.aliases))
            if aliases:
                parts.append(f"{name} ({'alias' if len(aliases) == 1 else 'aliases'} {', '.join(aliases)})")
            else:
                parts.append(name)
        return ", ".join(parts) if parts else "(none registered)"

    def resolve(self, name: str, *, missing_ok: bool = False) -> tuple[Entry[T], str | None] | None:
        """Find the entry for ``name``: (entry, variant) where variant is the prefix suffix.

        Raises :class:`UnknownComponentError` (unless ``missing_ok``) for a name nobody registered and
        :class:`ComponentClashError` for a name two plugins registered.
        """
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
        hint = did_you_mean(name, list(self._keys))  # names and aliases: all of them are in the listing
        raise UnknownComponentError(f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {self.listing()}.")

    def get(self, name: str) -> Entry[T]:
        found = self.resolve(name)
        assert found is not None
        return found[0]

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Call the factory of ``name`` with ``kwargs`` (plus ``variant=`` for prefix entries).

        The factory runs under :func:`plugin_errors`: anything it raises but a ``DistillctlError``
        becomes one :class:`PluginError` line naming the plugin and its version.
        """
        found = self.resolve(name)
        assert found is not None
        entry, variant = found
        if variant is not None:
            kwargs["variant"] = variant
        with plugin_errors(entry, name=name):
            return entry.factory(**kwargs)
