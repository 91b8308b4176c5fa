"""The plugin registry: kinds -> names -> factories.

Built-in plugins (``rdkit_ae.plugins``) and third-party plugins (entry points
in the group ``rdkit_ae.plugins``) are loaded lazily, the first time anything
is looked up, so importing :mod:`rdkit_ae` stays cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterator

from rdkit_ae.errors import PluginError

ENTRY_POINT_GROUP = "rdkit_ae.plugins"
BUILTIN_MODULES = (
    "rdkit_ae.plugins.encoders",
    "rdkit_ae.plugins.decoders",
    "rdkit_ae.plugins.block",
    "rdkit_ae.plugins.fixed_rate",
    "rdkit_ae.plugins.entropy_coded",
    "rdkit_ae.plugins.meanscale",
    "rdkit_ae.plugins.variable_rate",
    "rdkit_ae.plugins.checkerboard",
    "rdkit_ae.plugins.losses",
    "rdkit_ae.plugins.perceptual_losses",
    "rdkit_ae.plugins.rd_perceptual",
    "rdkit_ae.plugins.callbacks",
    "rdkit_ae.plugins.ema",
    "rdkit_ae.plugins.tensorboard",
)
BUILTIN = "built-in"


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    factory: Callable[..., Any]
    origin: str

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class PluginFailure:
    """A third-party plugin whose entry point could not be loaded."""

    name: str
    origin: str
    error: str


@dataclass
class Registry:
    kinds: list[str] = field(default_factory=lambda: ["encoder", "decoder", "quantizer", "loss", "callback"])
    _plugins: dict[str, dict[str, PluginInfo]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    _loaded: bool = False  # built-ins and entry points
    _builtins: str = "no"  # "no", "loading", "yes"
    _origin: str = "user"

    # -- registration -------------------------------------------------
    def add_kind(self, kind: str) -> None:
        """Open a new plugin kind (for example ``dataset`` or ``metric``)."""
        if kind not in self.kinds:
            self.kinds.append(kind)

    def register(self, kind: str, name: str | None = None, *, replace: bool = False):
        """Decorator: register a class or factory under ``kind`` and ``name``.

        The name defaults to the object's ``__name__``. Registering a name twice
        is an error unless ``replace=True``.
        """
        self._check_kind(kind)
        # The built-ins first, so that a user's replace=True of a built-in name wins over the
        # built-in module imported later (and the built-in's own registration cannot fail on it).
        self._load_builtins()

        def deco(obj):
            key = name or obj.__name__
            table = self._plugins.setdefault(kind, {})
            if key in table and not replace and table[key].factory is not obj:
                raise PluginError(
                    f"{kind} '{key}' is already registered (from {table[key].origin}); pass replace=True to override it"
                )
            origin = self._origin
            if origin == "user":
                # Registered outside discovery: name the module (built-in if ours).
                module = getattr(obj, "__module__", None) or "user"
                origin = BUILTIN if module.startswith("rdkit_ae.plugins.") else module
            table[key] = PluginInfo(kind, key, obj, origin)
            return obj

        return deco

    def unregister(self, kind: str, name: str) -> None:
        self._plugins.get(kind, {}).pop(name, None)

    # -- lookup -------------------------------------------------------
    def get(self, kind: str, name: str) -> PluginInfo:
        self.load()
        self._check_kind(kind)
        table = self._plugins.get(kind, {})
        if name not in table:
            available = sorted(table)
            close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            failed = [f.name for f in self.failures]
            broken = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise PluginError(f"unknown {kind} '{name}'; available: {', '.join(available) or 'none'}{hint}{broken}")
        return table[name]

    def create(self, kind: str, name: str, /, **params: Any) -> Any:
        """Instantiate ``kind``/``name`` with keyword parameters, checked by name."""
        info = self.get(kind, name)
        check_params(info, params)
        return info.factory(**params)

    def list(self, kind: str | None = None) -> list[PluginInfo]:
        self.load()
        if kind is not None:
            self._check_kind(kind)
        kinds = [kind] if kind else self.kinds
        return [info for k in kinds for _, info in sorted(self._plugins.get(k, {}).items())]

    def _check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise PluginError(f"unknown plugin kind '{kind}'; kinds: {', '.join(self.kinds)}")

    # -- discovery ----------------------------------------------------
    @contextlib.contextmanager
    def _registering_as(self, origin: str) -> Iterator[None]:
        previous, self._origin = self._origin, origin
        try:
            yield
        finally:
            self._origin = previous

    def _load_builtins(self) -> None:
        """Import the built-in plugin modules once (a registration during that import is one of them)."""
        if self._builtins != "no":
            return
        self._builtins = "loading"
        try:
            with self._registering_as(BUILTIN):
                for module in BUILTIN_MODULES:
                    importlib.import_module(module)
        except BaseException:
            self._builtins = "no"  # nothing is marked loaded that is not: the next lookup tries again
            raise
        self._builtins = "yes"

    def load(self) -> None:
        """Import built-in plugins, then every entry point in ``rdkit_ae.plugins``."""
        if self._loaded:
            return
        self._load_builtins()
        self._loaded = True
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            origin = dist.name if dist is not None else ep.value
            try:
                with self._registering_as(origin):
                    target = ep.load()
                    # An entry point names a module (registration happens on
                    # import) or a callable that registers when called.
                    if callable(target) and not inspect.isclass(target):
                        target()
            except Exception as exc:  # a broken plugin must not break the rest
                self.failures.append(PluginFailure(ep.name, origin, f"{type(exc).__name__}: {exc}"))


def check_params(info: PluginInfo, params: dict[str, Any]) -> None:
    """Reject parameter names the factory does not accept, naming what it does."""
    sig = _signature(info.factory)
    if sig is None:
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PluginError(
                f"{info.kind} '{info.name}' has no parameter '{key}'{hint}; allowed: {', '.join(allowed) or 'none'}"
            )
    missing = [
        n
        for n, p in sig.parameters.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in params
    ]
    if missing:
        raise PluginError(f"{info.kind} '{info.name}' needs parameter(s): {', '.join(missing)}")


def accepted_params(factory: Callable[..., Any]) -> set[str] | None:
    """Names a factory accepts, or None when it takes ``**kwargs``."""
    sig = _signature(factory)
    if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    """The factory's signature; a class that inherits ``__init__`` from torch or ``object`` takes no parameters.

    ``nn.Module.__init__(*args, **kwargs)`` would otherwise accept anything, and
    a bogus loss parameter would fail at construction with a TypeError.
    """
    if inspect.isclass(factory):
        owner = next((c for c in factory.__mro__ if "__init__" in vars(c)), object)
        if owner is object or owner.__module__.startswith("torch."):
            return inspect.Signature()
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


REGISTRY = Registry()


def register(kind: str, name: str | None = None, *, replace: bool = False):
    """``@register("loss", "my-loss")``: register a plugin in the global registry."""
    return REGISTRY.register(kind, name, replace=replace)


def _kind_decorator(kind: str):
    def deco(name: str | None = None, *, replace: bool = False):
        return REGISTRY.register(kind, name, replace=replace)

    deco.__doc__ = f"``@register_{kind}(name)``: shorthand for ``register('{kind}', name)``."
    return deco


register_encoder = _kind_decorator("encoder")
register_decoder = _kind_decorator("decoder")
register_quantizer = _kind_decorator("quantizer")
register_loss = _kind_decorator("loss")
register_callback = _kind_decorator("callback")


def get_plugin(kind: str, name: str) -> PluginInfo:
    return REGISTRY.get(kind, name)


def create(kind: str, name: str, /, **params: Any) -> Any:
    return REGISTRY.create(kind, name, **params)


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    return REGISTRY.list(kind)
