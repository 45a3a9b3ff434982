"""A character-level LSTM language model on real English text (Python's documentation)."""

import math

import jax
import jax.numpy as jnp

from . import base, datasets


def char_lstm(
    hidden: int = 64,
    embed: int = 16,
    seq_len: int = 32,
    batch_size: int = 32,
    horizon: int = 100,
) -> base.Problem:
    """Embedding, one LSTM layer of `hidden` units, softmax over the characters.

    The text is `datasets.text_corpus` (``pydoc_data.topics``, shipped with Python); the
    loss is the mean next-character cross-entropy (nats) over random windows.
    """
    vocab = datasets.text_problem_data()[2]

    def init_params(key, instance):
        del instance
        k_e, k_w, k_o = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_e, (vocab, embed)),
            "lstm": {
                "w": jax.random.normal(k_w, (embed + hidden, 4 * hidden))
                / math.sqrt(embed + hidden),
                "b": jnp.zeros(4 * hidden),
            },
            "out": {
                "w": jax.random.normal(k_o, (hidden, vocab)) / math.sqrt(hidden),
                "b": jnp.zeros(vocab),
            },
        }

    def logits(params, x_BxL):
        e_LxBxE = jnp.swapaxes(params["embed"][x_BxL], 0, 1)
        b = x_BxL.shape[0]

        def cell(carry, e_BxE):
            h, c = carry
            z = jnp.concatenate([e_BxE, h], -1) @ params["lstm"]["w"] + params["lstm"]["b"]
            i, f, g, o = jnp.split(z, 4, -1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)  # forget bias 1
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((b, hidden))
        _, h_LxBxH = jax.lax.scan(cell, (zeros, zeros), e_LxBxE)
        return jnp.swapaxes(h_LxBxH, 0, 1) @ params["out"]["w"] + params["out"]["b"]

    return base.language_model(
        f"char_lstm_h{hidden}_s{seq_len}",
        f"char LSTM LM: embed {embed}, LSTM {hidden}, {vocab} chars, seq {seq_len}, "
        f"batch {batch_size}",
        init_params,
        logits,
        batch_size=batch_size,
        seq_len=seq_len,
        horizon=horizon,
    )
