"""The plugin manager: built-ins (``DEFAULT_PLUGINS``) and entry points, one set of hooks.

``get_plugins()`` loads every plugin once and fills one :class:`Registry` per kind. A plugin that
fails to import or raises inside a hook is recorded in ``broken`` (one line naming the plugin, its
version and the error) and the rest keeps working. Two plugins registering one name is a clash
(``clashes()``): both are listed, every other name keeps working, and only asking for the clashing
name fails, with the exact ``DISTILLCTL_DISABLE_PLUGINS=...`` that resolves it.
``DISTILLCTL_DISABLE_PLUGINS=a,b`` blocks plugins by name (entry-point name or distribution name).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from distillctl import hookspecs
from distillctl.errors import DistillctlError, PluginError, debug_enabled
from distillctl.registry import Clash, Provenance, Registry, Shadow, disable_value

ENTRY_POINT_GROUP = "distillctl"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "distillctl.default_plugins.teachers",
    "distillctl.default_plugins.students",
    "distillctl.default_plugins.splitters",
    "distillctl.default_plugins.policies",
    "distillctl.default_plugins.datasets",
    "distillctl.default_plugins.evaluators",
    "distillctl.default_plugins.families",
    "distillctl.default_plugins.trackers",
)

# hook name -> registry kind (singular, used in messages and the plugins table)
KINDS: dict[str, str] = {
    "register_teachers": "teacher",
    "register_students": "student",
    "register_splitters": "splitter",
    "register_policies": "policy",
    "register_datasets": "dataset",
    "register_evaluators": "evaluator",
    "register_families": "family",
    "register_trackers": "tracker",
}


@dataclass
class BrokenPlugin:
    name: str
    distribution: str
    error: str
    version: str = "?"
    traceback: str = ""  # the formatted traceback behind ``error`` (``DISTILLCTL_DEBUG=1 distillctl plugins``)

    def line(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version}) is broken: {self.error}"


@dataclass
class Plugins:
    """Everything loaded: the pluggy manager, one registry per kind, and the broken plugins."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry[Any]] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    provenance: dict[str, Provenance] = field(default_factory=dict)  # pluggy name -> provenance

    def registry(self, kind: str) -> Registry[Any]:
        return self.registries[kind]

    def clashes(self) -> list[Clash]:
        """Every name two or more plugins registered, all kinds (hook order)."""
        return [clash for reg in self.registries.values() for clash in reg.clashes()]

    def shadowed(self) -> list[Shadow]:
        """Every plugin registration of a built-in name (the built-in kept it), all kinds (hook order)."""
        return [shadow for reg in self.registries.values() for shadow in reg.shadowed()]


def disabled_plugins() -> set[str]:
    raw = os.environ.get("DISTILLCTL_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def _version() -> str:
    from distillctl import __version__

    return __version__


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DistillctlError) else str(exc)
    return " ".join(text.split())


def _broken(name: str, dist: str, version: str, exc: BaseException) -> BrokenPlugin:
    import traceback

    return BrokenPlugin(name, dist, _one_line(exc), version, "".join(traceback.format_exception(exc)))


def _parse_api(value: str) -> tuple[int, int]:
    major, _, minor = str(value).strip().partition(".")
    return int(major), int(minor or 0)


def api_refusal(obj: Any) -> str | None:
    """Why a plugin object cannot be loaded because of the plugin API it declares, or None.

    A plugin declares the API it needs with ``DISTILLCTL_PLUGIN_API = "MAJOR.MINOR"`` on its entry-point
    object (:data:`distillctl.PLUGIN_API`): loaded when MAJOR equals ours and MINOR is not newer.
    """
    declared = getattr(obj, "DISTILLCTL_PLUGIN_API", None)
    if declared is None:
        return None
    try:
        need = _parse_api(declared)
        have = _parse_api(hookspecs.PLUGIN_API)
    except ValueError:
        return (f"DISTILLCTL_PLUGIN_API = {declared!r} is not a version like \"{hookspecs.PLUGIN_API}\"; "
                "fix the plugin's declaration")
    here = f"this distillctl {_version()} provides plugin API {hookspecs.PLUGIN_API}"
    if need[0] > have[0] or (need[0] == have[0] and need[1] > have[1]):
        return f"requires distillctl plugin API {declared}, {here}: upgrade distillctl (pip install -U distillctl)"
    if need[0] < have[0]:
        return (f"was written for distillctl plugin API {declared}, {here} (see the CHANGELOG's \"Breaking (plugin API)\"): "
                f"upgrade the plugin, or pin the distillctl it was written for")
    return None


def load_plugins(*, include_entry_points: bool = True, extra: tuple[Any, ...] = ()) -> Plugins:
    """Build a fresh plugin manager and fill the registries.

    ``include_entry_points=False`` loads only the built-ins (tests use it so that whatever
    happens to be installed cannot change their outcome); ``extra`` adds plugin objects.
    """
    pm = pluggy.PluginManager("distillctl")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    blocked = disabled_plugins()
    builtin = Provenance("distillctl", "distillctl", _version())

    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        if modname in blocked or f"distillctl.{short}" in blocked:
            continue
        try:
            mod = importlib.import_module(modname)
            pm.register(mod, name=modname)
            plugins.provenance[modname] = builtin
        except Exception as exc:  # a built-in that fails is reported, never fatal
            plugins.broken.append(_broken(modname, "distillctl", builtin.version, exc))

    if include_entry_points:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            ver = ep.dist.version if ep.dist is not None else "?"
            if ep.name in blocked or dist in blocked:
                continue
            if pm.has_plugin(ep.name):
                first = plugins.provenance.get(ep.name)
                if first is not None and first.distribution != dist:  # two distributions, one entry-point name
                    why = f"not loaded: its entry-point name {ep.name!r} is taken by {first}"
                    fix = f"set {disable_value([first.distribution])} to load this one instead"
                    plugins.broken.append(BrokenPlugin(ep.name, dist, f"{why} ({fix})", ver))
                continue
            try:
                obj = ep.load()
                refusal = api_refusal(obj)
                if refusal is not None:
                    plugins.broken.append(BrokenPlugin(ep.name, dist, refusal, ver))
                    continue
                pm.register(obj, name=ep.name)
                plugins.provenance[ep.name] = Provenance(ep.name, dist, ver)
            except Exception as exc:
                plugins.broken.append(_broken(ep.name, dist, ver, exc))

    for i, obj in enumerate(extra):
        name = getattr(obj, "__name__", None) or f"extra-{i}"
        dist = getattr(obj, "distribution", name)
        if name in blocked or dist in blocked:
            continue
        refusal = api_refusal(obj)
        if refusal is not None:
            plugins.broken.append(BrokenPlugin(name, dist, refusal, getattr(obj, "version", "0")))
            continue
        pm.register(obj, name=name)
        plugins.provenance[name] = Provenance(name, dist, getattr(obj, "version", "0"))

    try:
        pm.check_pending()  # a misspelt hookimpl fails loudly (pluggy habit)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {_one_line(exc)}") from None

    for hook_name, kind in KINDS.items():
        registry: Registry[Any] = Registry(kind)
        plugins.registries[kind] = registry
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order: built-ins, entry points, extras
            prov = plugins.provenance.get(impl.plugin_name, Provenance(impl.plugin_name, impl.plugin_name, "?"))

            def register(
                name: str,
                factory: Any,
                *,
                aliases: Any = (),
                summary: str | None = None,
                _p: Provenance = prov,
                _r: Registry[Any] = registry,
            ) -> None:
                # a name two plugins claim is recorded, not fatal: only that name refuses to resolve
                _r.register(name, factory, aliases=tuple(aliases), summary=summary, provenance=_p, on_clash="record")

            try:
                impl.function(register=register)
            except Exception as exc:
                plugins.broken.append(_broken(impl.plugin_name, prov.distribution, prov.version, exc))
    return plugins


_CACHE: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugins (loaded on first use)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = load_plugins()
    return _CACHE


_get_plugins_default = get_plugins


def reset_plugins(plugins: Plugins | None = None) -> None:
    """Drop (or replace) the cached plugins; tests use it."""
    global _CACHE
    _CACHE = plugins


def registry(kind: str) -> Registry[Any]:
    return get_plugins().registry(kind)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def plugin_fault(exc: BaseException) -> PluginError | None:
    """The CLI's last line of defence: an exception that escaped from a plugin's own code, as one
    :class:`PluginError` line naming the plugin, its distribution and version, or None when no plugin
    code is on the traceback (then it is distillctl's bug and keeps its traceback).

    Call sites that know the component wrap it with :func:`distillctl.registry.call_plugin` (a better
    line: ``policy 'greedy' from plugin ... failed in select: ...``); this catches the rest, e.g. a
    method of a plugin's family called deep inside the engine. The plugin is found from the innermost
    traceback frame whose module belongs to a loaded third-party plugin: its entry-point module's
    package, or the module of a factory it registered.
    """
    import sys
    import types

    if _CACHE is None and get_plugins is _get_plugins_default:  # nothing loaded: no plugin code can have run
        return None
    try:
        loaded = get_plugins()
    except Exception:  # noqa: BLE001 - loading failed already: nothing to attribute
        return None
    exact: dict[str, Provenance] = {}
    for name, obj in loaded.pm.list_name_plugin():
        prov = loaded.provenance.get(name)
        if prov is not None and not prov.builtin and obj is not None:
            exact.setdefault(obj.__name__ if isinstance(obj, types.ModuleType) else type(obj).__module__, prov)
    for reg in loaded.registries.values():
        for entry in reg:
            module = getattr(entry.factory, "__module__", None)
            if isinstance(module, str) and not entry.provenance.builtin:
                exact.setdefault(module, entry.provenance)
    ignored = set(sys.stdlib_module_names) | {"distillctl", "builtins", "__main__"}
    exact = {m: p for m, p in exact.items() if _top(m) not in ignored}
    packages: dict[str, Provenance] = {}
    for module, prov in exact.items():
        packages.setdefault(_top(module), prov)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first: the plugin code closest to the failure
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            continue
        prov = exact.get(module) or packages.get(_top(module))
        if prov is None:
            continue
        where = frame.f_code.co_name
        where = f" in {where}" if not where.startswith("<") else ""
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        message = " ".join(f"plugin {prov.plugin!r} ({prov}) failed{where}: {detail}".split())
        fault = PluginError(message, hint="(DISTILLCTL_DEBUG=1 shows the traceback.)")
        fault.__cause__ = exc
        return fault
    return None


def call_observers(hook_name: str, **kwargs: Any) -> None:
    """Call an observer hook; an observer that raises is reported, never fatal to the run.

    The warning is one line naming the plugin and its version (like :func:`distillctl.registry.call_plugin`);
    ``DISTILLCTL_DEBUG=1`` also prints the traceback.
    """
    loaded = get_plugins()
    hook = getattr(loaded.pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - an observer must not kill a run (DistillctlError included)
            import sys

            prov = loaded.provenance.get(impl.plugin_name, Provenance(impl.plugin_name, impl.plugin_name, "?"))
            if debug_enabled():
                import traceback

                traceback.print_exc(file=sys.stderr)
            print(
                f"warning: plugin {impl.plugin_name!r} ({prov}) failed in {hook_name}: {_one_line(exc)}; the run goes on.",
                file=sys.stderr,
            )
