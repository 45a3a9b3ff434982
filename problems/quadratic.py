"""The quadratic family f(x) = ||W x - y||^2 of Andrychowicz et al. 2016."""

import jax
import jax.numpy as jnp

from . import base


def quadratic(
    dim: int = 10,
    distribution: str = "normal",
    init_scale: float = 0.01,
    horizon: int = 100,
    condition: float | None = None,
) -> base.Problem:
    r"""Quadratics :math:`f(x) = \lVert W x - y \rVert^2` with `W`, `y` drawn per instance.

    Args:
      dim: size of `x`; `W` is ``dim x dim``.
      distribution: ``"normal"`` (the paper: standard Gaussian `W`, `y`) or ``"uniform"``
        (the original code: uniform on [0, 1)).
      init_scale: `x` starts at ``N(0, init_scale^2)`` (the original code: 0.01).
      horizon: default steps per optimizee.
      condition: if set, ``W = U diag(s) V^T`` with random orthogonal U, V and singular
        values s log-spaced so that the Hessian ``2 W^T W`` has this condition number
        (y stays Gaussian).
    """
    if distribution not in ("normal", "uniform"):
        raise ValueError(f"distribution={distribution!r}: must be 'normal' or 'uniform'")
    draw = jax.random.normal if distribution == "normal" else jax.random.uniform

    def sample_instance(key):
        kw, ky = jax.random.split(key)
        if condition is None:
            return {"w": draw(kw, (dim, dim)), "y": draw(ky, (dim,))}
        ku, kv = jax.random.split(kw)
        u, _ = jnp.linalg.qr(jax.random.normal(ku, (dim, dim)))
        v, _ = jnp.linalg.qr(jax.random.normal(kv, (dim, dim)))
        s = jnp.logspace(0.0, -0.5 * jnp.log10(condition), dim)
        return {"w": (u * s) @ v.T, "y": draw(ky, (dim,))}

    def init_params(key, instance):
        del instance
        return {"x": init_scale * jax.random.normal(key, (dim,))}

    def loss(params, instance, batch):
        del batch
        return jnp.sum((instance["w"] @ params["x"] - instance["y"]) ** 2)

    name = "quadratic" if distribution == "normal" else "quadratic_uniform"
    if condition is not None:
        name = "quadratic_illcond"
    return base.Problem(
        name=name,
        sample_instance=sample_instance,
        init_params=init_params,
        sample_batch=base.no_batch,
        loss=loss,
        horizon=horizon,
        description=f"{dim}-dim ||Wx - y||^2, W and y {distribution} per instance"
        + (f", Hessian condition number {condition:g}" if condition else ""),
    )
