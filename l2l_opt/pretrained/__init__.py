"""Weights shipped with the package, checked against their sha256 before use."""

import functools
import hashlib
import importlib.resources

import haiku as hk

from l2l_opt import checkpoint
from l2l_opt.config import LSTMOptConfig

DEFAULT = "mnist"
# name -> sha256 of l2l_opt/pretrained/<name>.npz; a test recomputes each.
SHA256 = {
    "mnist": "b9bbc1fc4c4151fda1be26827dbdc47ee4dcf0f6ff72234211ce750d2724a21f",
    "quadratic": "bd726f514afbff06cab881e41236c0ba0549e3213be0b65d6a5f405016636fd0",
}


def names() -> tuple[str, ...]:
    """The shipped weights' names."""
    return tuple(SHA256)


def path(name: str):
    """Path to the shipped file `name`.npz."""
    if name not in SHA256:
        raise ValueError(f"no shipped weights named {name!r}; available: {list(SHA256)}")
    return importlib.resources.files(__name__).joinpath(f"{name}.npz")


def sha256(file) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


@functools.cache
def load(name: str) -> tuple[hk.Params, LSTMOptConfig]:
    """``(theta, config)`` of the shipped weights `name`, loaded once and read-only."""
    file = path(name)
    digest = sha256(file)
    if digest != SHA256[name]:
        raise checkpoint.CheckpointError(
            f"{file}: sha256 {digest} does not match the expected {SHA256[name]}; "
            "the installed package is damaged, reinstall l2l-opt"
        )
    theta, config = checkpoint.load_weights(file)
    for module in theta.values():
        for arr in module.values():
            arr.setflags(write=False)
    return theta, config
