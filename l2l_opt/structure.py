"""Optimizer states that survive frameworks which rebuild pytrees (Flax NNX)."""

from collections.abc import Mapping
from typing import Any


def restore(tree: Any, like: Any) -> Any:
    """`tree` in the structure of `like`, a nest of tuples and NamedTuples.

    Flax NNX's ``nnx.Optimizer`` stores an optimizer state as nested ``nnx.State`` mappings:
    a tuple comes back as ``{0: .., 1: ..}`` and a NamedTuple as ``{"field": ..}``. This
    reads such mappings by index or field name wherever `like` has a tuple; the leaves of
    `like` only mark where `tree`'s own leaves go.
    """
    if not isinstance(like, tuple | list):
        return tree
    fields = getattr(like, "_fields", None)
    if isinstance(tree, Mapping):
        keys = fields if fields and all(f in tree for f in fields) else range(len(like))
        items = [tree[k] for k in keys]
    else:
        items = list(tree)
    children = [restore(t, c) for t, c in zip(items, like, strict=True)]
    return type(like)(*children) if fields else type(like)(children)
