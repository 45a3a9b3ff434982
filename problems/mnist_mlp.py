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
    layer_norm: bool = False,
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
      layer_norm: normalise each hidden layer's pre-activations over its units, with a
        learned scale (starting at 1) and offset (at 0) per unit (Ba et al. 2016): many
        small tensors, as in transformers and conv nets.

    The name is ``mnist_mlp_h{hidden}_d{layers}_{activation}``, with ``_ln`` for
    `layer_norm` and ``_b{batch_size}`` for a batch other than 128.
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
            if layer_norm and i < len(sizes) - 2:
                params[f"norm_{i}"] = {"scale": jnp.ones(n_out), "offset": jnp.zeros(n_out)}
        return params

    def logits(params, instance, x_BxHxW):
        h = x_BxHxW.reshape(x_BxHxW.shape[0], -1)
        for i in range(len(sizes) - 1):
            h = h @ params[f"layer_{i}"]["w"] + params[f"layer_{i}"]["b"]
            if i < len(sizes) - 2:
                if layer_norm:
                    h = base.layer_norm(h, **params[f"norm_{i}"])
                h = jax.lax.switch(instance["activation"], acts, h)
        return h

    arch = "-".join(str(s) for s in sizes)
    name = f"mnist_mlp_h{hidden}_d{layers}_{activation}"
    name += "_ln" * layer_norm + f"_b{batch_size}" * (batch_size != 128)
    norm_text = ", layer norm" * layer_norm
    return base.image_classifier(
        name,
        f"MLP {arch}, {activation}{norm_text}, cross-entropy, batch {batch_size}",
        sample_instance,
        init_params,
        logits,
        batch_size=batch_size,
        horizon=horizon,
    )
