"""KV-cache plumbing for the HF scorer's shared prefixes and headers: which caches can be shared, how a forward takes
and returns them, and the row views (copies or read-only expansions) that let many rows continue one cached run.

Why a module of its own: transformers' cache API has changed shape across versions (tuple caches, ``DynamicCache``
layers, ``past_key_values`` renamed to ``cache``); keeping every place that touches a cache's internals here means a
new transformers release is fixed in one file, and the scorer only asks for "this header, seen by n rows".
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Header:
    """Leading tokens shared by every row of a family of forwards, run once; rows attend to its KV cache."""

    tokens: tuple[int, ...]
    cache: Any


def _cache_is_plain(config: Any) -> bool:
    """Prefix sharing expands plain KV caches; sliding-window / hybrid / recurrent layers fall back to naive."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    types = getattr(cfg, "layer_types", None)
    if types and any(t != "full_attention" for t in types):
        return False
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return False
    return not getattr(cfg, "is_encoder_decoder", False)


def _cache_kwarg(model: Any) -> str:
    """The name under which ``model.forward`` takes the KV cache: ``cache`` where it declares it (transformers 5
    renamed ``past_key_values``; the old name warns, and goes away in 5.40), else ``past_key_values`` (older
    transformers, remote-code models)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The KV cache a forward returned, read by its field name (``out.past_key_values`` is a deprecated alias that
    warns on transformers with the ``cache`` field); None when the forward kept no cache."""
    keys = out.keys() if hasattr(out, "keys") else ()
    for name in ("cache", "past_key_values"):
        if name in keys:
            return out[name]
    return None


def _read_only_view(cache: Any, rows: int) -> Any:
    """``cache`` (one row) as seen by ``rows`` rows -- expanded views, no copies -- in a cache that a forward reads
    but never extends: a plain cache would keep every layer's concatenated header + row keys and values until the
    forward ends (~200 MB more peak memory on a 100M model's packed JCQA forwards), although a scoring forward
    needs each layer's only while that layer runs."""
    if getattr(cache, "layers", None) is None:  # legacy tuple cache: plain copies
        return _select_cache(cache, torch.zeros(rows, dtype=torch.long, device=cache[0][0].device))
    return _read_only_cache_class()(ddp_cache_data=[(layer.keys.expand(rows, *layer.keys.shape[1:]),
                                                     layer.values.expand(rows, *layer.values.shape[1:]))
                                                    for layer in cache.layers])


@functools.cache
def _read_only_cache_class() -> type:
    """A ``DynamicCache`` whose ``update`` returns past + new keys/values without storing them."""
    from transformers import DynamicCache

    class ReadOnlyCache(DynamicCache):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            layer = self.layers[layer_idx]
            return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    return ReadOnlyCache


def _select_cache(cache: Any, idx: torch.Tensor) -> Any:
    """A new cache holding rows ``idx`` of ``cache`` (rows may repeat); ``cache`` itself is left untouched so that
    several suffix chunks can reuse one prefix run."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if layers is None:  # legacy tuple-of-tuples cache
        return tuple((k.index_select(0, idx), v.index_select(0, idx)) for k, v in cache)
    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, idx), layer.values.index_select(0, idx))
                                        for layer in layers])
