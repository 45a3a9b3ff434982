"""A small convolutional net on MNIST, after the paper's CIFAR-10 optimizee."""

import math

import jax
import jax.numpy as jnp

from . import base


def _conv(x_BxHxWxC, w_KxKxCxD, b_D):
    y = jax.lax.conv_general_dilated(
        x_BxHxWxC, w_KxKxCxD, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b_D


def _max_pool(x_BxHxWxC):
    return jax.lax.reduce_window(
        x_BxHxWxC, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
    )


def _batch_norm(x, scale, offset, eps=1e-5):
    """Normalises with the batch's own statistics (training mode; no running averages)."""
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + offset


def mnist_conv(
    channels: int = 16,
    conv_layers: int = 3,
    hidden: int = 32,
    batch_norm: bool = False,
    batch_size: int = 128,
    horizon: int = 100,
) -> base.Problem:
    """Conv net: `conv_layers` x (5x5 conv of `channels`, ReLU, 2x2 max-pool), a hidden
    linear layer of `hidden` with ReLU, and the 10-way output, on 28x28 MNIST.

    Parameters are named ``conv_*`` and ``fc_*``, so conv and fully connected parameters
    can be given separate LSTMs. Weights start He-normal, biases at zero.
    """
    side = 28
    for _ in range(conv_layers):
        side //= 2
    flat = side * side * channels

    def init_params(key, instance):
        del instance
        keys = jax.random.split(key, conv_layers + 2)
        params, c_in = {}, 1
        for i in range(conv_layers):
            std = math.sqrt(2.0 / (25 * c_in))
            layer = {
                "w": std * jax.random.normal(keys[i], (5, 5, c_in, channels)),
                "b": jnp.zeros(channels),
            }
            if batch_norm:
                layer["bn_scale"] = jnp.ones(channels)
                layer["bn_offset"] = jnp.zeros(channels)
            params[f"conv_{i}"] = layer
            c_in = channels
        params["fc_0"] = {
            "w": math.sqrt(2.0 / flat) * jax.random.normal(keys[-2], (flat, hidden)),
            "b": jnp.zeros(hidden),
        }
        params["fc_1"] = {
            "w": math.sqrt(1.0 / hidden) * jax.random.normal(keys[-1], (hidden, 10)),
            "b": jnp.zeros(10),
        }
        return params

    def logits(params, instance, x_BxHxW):
        del instance
        h = x_BxHxW[..., None]
        for i in range(conv_layers):
            p = params[f"conv_{i}"]
            h = _conv(h, p["w"], p["b"])
            if batch_norm:
                h = _batch_norm(h, p["bn_scale"], p["bn_offset"])
            h = _max_pool(jax.nn.relu(h))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(h @ params["fc_0"]["w"] + params["fc_0"]["b"])
        return h @ params["fc_1"]["w"] + params["fc_1"]["b"]

    bn = ", batch norm" if batch_norm else ""
    return base.image_classifier(
        f"mnist_conv_c{channels}_b{batch_size}" + ("_bn" if batch_norm else ""),
        f"conv net {conv_layers}x(5x5x{channels} conv, ReLU, 2x2 pool){bn}, fc {hidden}, "
        f"10-way, batch {batch_size}",
        base.no_instance,
        init_params,
        logits,
        batch_size=batch_size,
        horizon=horizon,
    )
