"""The paper's optimizee: a multilayer perceptron on MNIST."""

import jax
import jax.numpy as jnp

from . import base

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
}


def mnist_mlp(
    hidden: int = 20,
    layers: int = 1,
    activation: str = "sigmoid",
    batch_size: int = 128,
    init_scale: float = 0.01,
    horizon: int = 100,
) -> base.Problem:
    """MLP 784 - `hidden` x `layers` - 10 with cross-entropy loss on MNIST batches.

    Weights and biases start at ``N(0, init_scale^2)`` (the original code: 0.01).

    Args:
      hidden: units per hidden layer (paper: 20; generalisation test: 40).
      layers: hidden layers (paper: 1; generalisation test: 2).
      activation: ``sigmoid`` (paper), ``relu``, ``tanh``, ``elu``, or ``random``: each
        instance draws one of the four (a task family for meta-training).
      batch_size: images per step (paper: 128).
      init_scale: standard deviation of the initial weights and biases.
      horizon: default steps per optimizee (paper: 100).
    """
    if activation not in (*ACTIVATIONS, "random"):
        raise ValueError(f"activation={activation!r}: must be one of {[*ACTIVATIONS, 'random']}")
    sizes = [784] + [hidden] * layers + [10]
    acts = list(ACTIVATIONS.values())

    def sample_instance(key):
        if activation == "random":
            return {"activation": jax.random.randint(key, (), 0, len(acts))}
        return {"activation": jnp.asarray(list(ACTIVATIONS).index(activation), jnp.int32)}

    def init_params(key, instance):
        del instance
        keys = jax.random.split(key, 2 * (len(sizes) - 1))
        params = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            params[f"layer_{i}"] = {
                "w": init_scale * jax.random.normal(keys[2 * i], (n_in, n_out)),
                "b": init_scale * jax.random.normal(keys[2 * i + 1], (n_out,)),
            }
        return params

    def logits(params, instance, x_BxHxW):
        h = x_BxHxW.reshape(x_BxHxW.shape[0], -1)
        for i in range(len(sizes) - 1):
            h = h @ params[f"layer_{i}"]["w"] + params[f"layer_{i}"]["b"]
            if i < len(sizes) - 2:
                h = jax.lax.switch(instance["activation"], acts, h)
        return h

    arch = "-".join(str(s) for s in sizes)
    return base.image_classifier(
        f"mnist_mlp_h{hidden}_d{layers}_{activation}",
        f"MLP {arch}, {activation}, cross-entropy, batch {batch_size}",
        sample_instance,
        init_params,
        logits,
        batch_size=batch_size,
        horizon=horizon,
    )
