"""The shipped weights' updates, bit for bit as the library computed them before the step-size
controller became its own transformation (`tests/data/golden_updates.npz`)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2l_opt

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden_updates.npz"
STEPS = 150
# (weights, num_steps): the default also with its horizon told.
CASES = (("mixture", None), ("mixture", STEPS), ("mnist", None), ("quadratic", None))


def case_key(name: str, num_steps: int | None) -> str:
    return f"{name}@{num_steps}" if num_steps else name


def trajectory(name: str, num_steps: int | None) -> dict[str, np.ndarray]:
    """Every update of `learned_opt(name)` over `STEPS` steps of a noisy quadratic in a tree of a
    matrix, a vector and a scalar: ``{leaf: [STEPS, *shape]}``."""
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w": jax.random.normal(keys[0], (8, 6)),
        "b": jax.random.normal(keys[1], (6,)),
        "s": jnp.asarray(2.0),
    }
    scales = {"w": jnp.linspace(0.1, 10.0, 48).reshape(8, 6), "b": jnp.full((6,), 0.3), "s": 3.0}

    def grads(p, key):
        exact = jax.tree.map(lambda x, a: a * x, p, scales)
        leaves, treedef = jax.tree.flatten(exact)
        noise_keys = jax.random.split(key, len(leaves))
        noise = [
            0.05 * jax.random.normal(k, jnp.shape(g))
            for g, k in zip(leaves, noise_keys, strict=True)
        ]
        noisy = [g + n for g, n in zip(leaves, noise, strict=True)]
        return treedef.unflatten(noisy)

    tx = l2l_opt.learned_opt(name, num_steps=num_steps)

    @jax.jit
    def step(p, state, key):
        updates, state = tx.update(grads(p, key), state, p)
        return jax.tree.map(jnp.add, p, updates), state, updates

    state, out = tx.init(params), []
    for key in jax.random.split(keys[3], STEPS):
        params, state, updates = step(params, state, key)
        out.append(updates)
    return {k: np.stack([np.asarray(u[k]) for u in out]) for k in params}


def write_golden(path=GOLDEN) -> None:
    """Writes `GOLDEN` from the library as it is now."""
    arrays = {}
    for name, num_steps in CASES:
        for leaf, value in trajectory(name, num_steps).items():
            arrays[f"{case_key(name, num_steps)}/{leaf}"] = value
    np.savez(path, **arrays)


@pytest.mark.parametrize("name,num_steps", CASES)
def test_shipped_weights_give_the_golden_updates_bit_for_bit(name, num_steps):
    golden = np.load(GOLDEN, allow_pickle=False)
    got = trajectory(name, num_steps)
    for leaf, value in got.items():
        want = golden[f"{case_key(name, num_steps)}/{leaf}"]
        np.testing.assert_array_equal(value, want, err_msg=f"{name} {num_steps} {leaf}")


if __name__ == "__main__":
    write_golden()
