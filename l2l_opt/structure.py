"""Per-leaf optimizer state stored as one parameter-shaped tree per field.

An optimizer that keeps several buffers per parameter leaf (an LSTM's ``(h, c)`` per layer,
Adam's ``(m, v)``) computes leaf by leaf, but stores the buffers as optax's own optimizers
do: a nest of fields (`like`: tuples and NamedTuples), each field a tree shaped like the
parameters, with one array per leaf. Frameworks that wrap each parameter leaf of a state
(Flax NNX's ``nnx.Optimizer``) then find one array per wrapped leaf, and the state keeps
the structure `init` gave it from step to step, so a jitted step compiles once.
"""

from typing import Any

import jax


def per_leaf(tree: Any, treedef: Any, like: Any) -> list[Any]:
    """Splits stored state `tree` (`like`'s fields, each shaped like `treedef`) by leaf.

    Returns one nest shaped like `like` per leaf of `treedef`, holding that leaf's arrays.
    """
    like_def = jax.tree.structure(like)
    fields = [treedef.flatten_up_to(t) for t in like_def.flatten_up_to(tree)]
    return [like_def.unflatten([f[i] for f in fields]) for i in range(treedef.num_leaves)]


def by_field(leaves: list[Any], treedef: Any, like: Any) -> Any:
    """Inverse of `per_leaf`: one nest per leaf to `like`'s fields, each shaped like `treedef`."""
    like_def = jax.tree.structure(like)
    rows = [like_def.flatten_up_to(x) for x in leaves]
    return like_def.unflatten(
        [treedef.unflatten([r[j] for r in rows]) for j in range(like_def.num_leaves)]
    )
