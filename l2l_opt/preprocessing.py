"""Gradient preprocessing: per-coordinate gradients to LSTM input features.

Features are laid out coordinates last, ``[F, N]``, like the LSTM state (see
`l2l_opt.lstm`).
"""

import jax
import jax.numpy as jnp


def identity(g_N: jax.Array, p: float = 10.0) -> jax.Array:
    """Feeds the raw gradient: :math:`x = g`, shape ``[N] -> [1, N]``.

    Args:
      g_N: flat gradient.
      p: unused, for a signature shared with `log_sign`.

    Returns:
      Features ``[1, N]`` in ``g_N``'s dtype.
    """
    del p
    return g_N[None, :]


def log_sign(g_N: jax.Array, p: float = 10.0) -> jax.Array:
    r"""The log/sign rule of Andrychowicz et al. 2016, Appendix A.

    .. math::
      x = \begin{cases} (\log|g| / p,\ \mathrm{sign}(g)) & |g| \ge e^{-p} \\
                        (-1,\ e^{p} g) & \text{otherwise} \end{cases}

    Non-finite gradients stay in their own coordinate: NaN maps to ``(-1, NaN)`` there and
    nowhere else; ``±inf`` maps to ``(inf, ±1)``.

    Args:
      g_N: flat gradient.
      p: threshold exponent (paper: 10).

    Returns:
      Features ``[2, N]`` in ``g_N``'s dtype.

    References:
      Andrychowicz et al., 2016: https://arxiv.org/abs/1606.04474
    """
    abs_g = jnp.abs(g_N)
    big = abs_g >= jnp.exp(-p)
    # The `where` inside the log keeps log(0) out of the graph, so gradients through
    # the unused branch stay finite when second derivatives are kept.
    safe_abs = jnp.where(big, abs_g, 1.0)
    first = jnp.where(big, jnp.log(safe_abs) / p, -1.0)
    second = jnp.where(big, jnp.sign(g_N), jnp.exp(p) * g_N)
    return jnp.stack([first, second]).astype(g_N.dtype)


def adam_moments(
    g_N: jax.Array, m_N: jax.Array, v_N: jax.Array, beta1: float, beta2: float
) -> tuple[jax.Array, jax.Array]:
    r"""Running moments: :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`."""
    return beta1 * m_N + (1 - beta1) * g_N, beta2 * v_N + (1 - beta2) * jnp.square(g_N)


def adam_features(
    g_N: jax.Array,
    m_N: jax.Array,
    v_N: jax.Array,
    count: jax.Array,
    beta1: float,
    beta2: float,
    eps: float = 1e-8,
) -> jax.Array:
    r"""Adam-normalised inputs (RNNprop, Lv et al. 2017), from moments already updated with g.

    .. math::
      \hat m = m / (1 - \beta_1^t), \quad \hat v = v / (1 - \beta_2^t), \quad
      x = (g, \hat m) / (\sqrt{\hat v} + \epsilon)

    with :math:`t` = `count` (>= 1). Computed in the moments' dtype (float32 or wider), so
    `eps` never rounds to zero.

    Returns:
      Features ``[2, N]``.
    """
    t = count.astype(m_N.dtype)
    m_hat = m_N / (1 - beta1**t)
    v_hat = v_N / (1 - beta2**t)
    denom = jnp.sqrt(v_hat) + eps
    return jnp.stack([g_N / denom, m_hat / denom])


PREPROCESSORS = {"identity": identity, "log_sign": log_sign}
NUM_FEATURES = {"identity": 1, "log_sign": 2, "adam": 2}
