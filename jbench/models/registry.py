"""The backend registry: variant name -> the backend that loads it, its pip extra and the modules it needs.

Why a registry: the runner and the CLI only ever ask for a variant by name. Built-in backends register here by
module path (nothing heavy is imported until a variant is used, so ``jbench --help`` stays fast and a missing
optional dependency gives the extra to install). Backends outside jbench register through the entry-point group
``jbench.backends``: an entry point ``NAME = "package.module:load_variant"`` adds variant ``NAME``, loaded by that
function (``load_variant(path, spec, *, use_fast) -> Scorer``). This module imports nothing from jbench's
backends, so no backend can form an import cycle with it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from jbench.errors import BackendMissing, ModelError
from jbench.models.variants import BUILTIN_BACKENDS, BUILTIN_ENGINES, ENGINE_INSTALL_HINTS

ENTRY_POINT_GROUP = "jbench.backends"

#: transformers dtype of each plain (unquantized) variant; quantized variants keep their checkpoint's
DTYPE_OF_VARIANT = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "auto": "auto"}


@dataclass(frozen=True)
class Backend:
    """How to load one variant. ``module`` (imported lazily) or ``loader`` provides ``load_variant``."""

    name: str
    module: str | None = None
    loader: Callable[..., Any] | None = field(default=None, compare=False)
    extra: str | None = None              # pip extra that installs its dependencies
    requires: tuple[str, ...] = ()        # importable modules it needs (checked before any weights load)
    origin: str = "jbench"                # "jbench" or the distribution of an entry point
    hint: str | None = None               # how to install it, when the extra alone does not say

    def missing_modules(self) -> list[str]:
        """The modules this backend needs that are not installed (``find_spec``: nothing is imported)."""
        out = []
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(mod)
        return out

    def install_hint(self) -> str:
        if self.hint:
            return self.hint
        if self.extra:
            return f'make install EXTRAS=...,{self.extra} (or pip install "jbench[{self.extra}]")'
        return "install the package that provides this backend"

    def load_function(self) -> Callable[..., Any]:
        """``load_variant`` of this backend; a missing dependency is a BackendMissing with the install hint."""
        if self.loader is not None:
            return self.loader
        assert self.module is not None
        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise BackendMissing(f"the {self.name} backend needs a package that is not installed ({err.name})",
                                 fix=self.install_hint()) from err
        return getattr(module, "load_variant")


_BACKENDS: dict[str, Backend] = {}
_entry_points_loaded = False


def register_backend(name: str, *, module: str | None = None, loader: Callable[..., Any] | None = None,
                     extra: str | None = None, requires: tuple[str, ...] = (), origin: str = "jbench") -> None:
    """Register variant ``name`` (a later registration of the same name replaces the earlier one)."""
    if (module is None) == (loader is None):
        raise ValueError("register_backend needs exactly one of module= or loader=")
    _BACKENDS[name] = Backend(name, module=module, loader=loader, extra=extra, requires=tuple(requires),
                              origin=origin)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BACKENDS:
            continue  # a built-in name is never shadowed by a plugin

        def lazy(*args: Any, _ep: Any = ep, **kwargs: Any) -> Any:
            return _ep.load()(*args, **kwargs)

        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        _BACKENDS[ep.name] = Backend(ep.name, loader=lazy, origin=str(dist))


def backends() -> dict[str, Backend]:
    """Every registered variant: the built-in ones, then those of installed plugins."""
    _load_entry_points()
    return dict(_BACKENDS)


def get_backend(name: str) -> Backend:
    known = backends()
    if name not in known:
        raise ModelError(f"unknown variant {name!r}", where=f"--variant {name}",
                         fix=f"choose one of: {', '.join(known)}")
    return known[name]


#: the default ``--backend``: each variant loads through its own entry above (transformers, llama.cpp for gguf)
DEFAULT_ENGINE = "hf"
_ENGINES: dict[str, tuple[Backend, tuple[str, ...]]] = {}


def register_engine(name: str, *, module: str, extra: str | None = None, requires: tuple[str, ...] = (),
                    variants: tuple[str, ...] = (), hint: str | None = None) -> None:
    """Register ``--backend name``: a serving engine that loads every variant in ``variants`` itself (``hf``, the
    default, is not an engine: it is the per-variant table)."""
    _ENGINES[name] = (Backend(name, module=module, extra=extra, requires=tuple(requires), hint=hint),
                      tuple(variants))


def engine_names() -> list[str]:
    """Every ``--backend`` value: ``hf`` first, then the registered engines."""
    return [DEFAULT_ENGINE, *_ENGINES]


def get_engine(name: str, variant: str) -> Backend:
    """The backend that loads ``variant`` under ``--backend name``; an unknown engine, or a variant the engine cannot
    load, is a ModelError (found by the validation step, before any weights load)."""
    if name == DEFAULT_ENGINE:
        return get_backend(variant)
    if name not in _ENGINES:
        raise ModelError(f"unknown backend {name!r}", where=f"--backend {name}",
                         fix=f"choose one of: {', '.join(engine_names())}")
    backend, variants = _ENGINES[name]
    if variants and variant not in variants:
        raise ModelError(f"the {name} backend cannot load the {variant} variant", where=f"--backend {name} "
                         f"--variant {variant}", fix=f"use one of {', '.join(variants)} with --backend {name}, or "
                                                     f"--backend {DEFAULT_ENGINE} for {variant}")
    return backend


def _register_builtins() -> None:
    """The variants jbench ships (see :mod:`jbench.models.variants` for what each one does)."""
    for name, (module, extra, requires) in BUILTIN_BACKENDS.items():
        register_backend(name, module=module, extra=extra, requires=requires)
    for name, (module, extra, requires, variants) in BUILTIN_ENGINES.items():
        register_engine(name, module=module, extra=extra, requires=requires, variants=variants,
                        hint=ENGINE_INSTALL_HINTS.get(name))


_register_builtins()  # plain data, nothing imported; a later register_backend() of the same name replaces it
