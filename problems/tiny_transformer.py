"""A tiny causal transformer language model on the same text as `char_lstm`."""

import math

import jax
import jax.numpy as jnp

from . import base, datasets


def tiny_transformer(
    layers: int = 1,
    width: int = 32,
    heads: int = 2,
    seq_len: int = 32,
    batch_size: int = 32,
    horizon: int = 100,
) -> base.Problem:
    """Pre-LN decoder-only transformer: `layers` blocks of causal self-attention (`heads`
    heads) and a 4x MLP, learned positions, width `width`, next-character cross-entropy."""
    vocab = datasets.text_problem_data()[2]
    head_dim = width // heads

    def init_params(key, instance):
        del instance
        keys = iter(jax.random.split(key, 3 + 4 * layers))
        normal = lambda shape, fan_in: jax.random.normal(next(keys), shape) / math.sqrt(fan_in)
        params = {
            "embed": 0.1 * jax.random.normal(next(keys), (vocab, width)),
            "pos": 0.1 * jax.random.normal(next(keys), (seq_len, width)),
            "ln_f": {"scale": jnp.ones(width), "offset": jnp.zeros(width)},
            "unembed": normal((width, vocab), width),
        }
        for i in range(layers):
            params[f"block_{i}"] = {
                "ln_1": {"scale": jnp.ones(width), "offset": jnp.zeros(width)},
                "qkv": normal((width, 3 * width), width),
                "proj": normal((width, width), width) / math.sqrt(2 * layers),
                "ln_2": {"scale": jnp.ones(width), "offset": jnp.zeros(width)},
                "mlp_in": {"w": normal((width, 4 * width), width), "b": jnp.zeros(4 * width)},
                "mlp_out": {
                    "w": normal((4 * width, width), 4 * width) / math.sqrt(2 * layers),
                    "b": jnp.zeros(width),
                },
            }
        return params

    def logits(params, x_BxL):
        b, length = x_BxL.shape
        h = params["embed"][x_BxL] + params["pos"][:length]
        mask = jnp.tril(jnp.ones((length, length), bool))
        for i in range(layers):
            p = params[f"block_{i}"]
            a = base.layer_norm(h, **p["ln_1"])
            q, k, v = jnp.split(a @ p["qkv"], 3, -1)
            q, k, v = (t.reshape(b, length, heads, head_dim) for t in (q, k, v))
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
            scores = jnp.where(mask, scores, -1e9)
            att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v)
            h = h + att.reshape(b, length, width) @ p["proj"]
            m = base.layer_norm(h, **p["ln_2"])
            m = jax.nn.gelu(m @ p["mlp_in"]["w"] + p["mlp_in"]["b"])
            h = h + m @ p["mlp_out"]["w"] + p["mlp_out"]["b"]
        return base.layer_norm(h, **params["ln_f"]) @ params["unembed"]

    return base.language_model(
        f"tiny_transformer_l{layers}_s{seq_len}",
        f"transformer LM: {layers} layer(s), width {width}, {heads} heads, {vocab} chars, "
        f"seq {seq_len}, batch {batch_size}",
        init_params,
        logits,
        batch_size=batch_size,
        seq_len=seq_len,
        horizon=horizon,
    )
