"""Weights shipped with the package, checked against their sha256 before use."""

import difflib
import functools
import hashlib
import importlib.resources

import haiku as hk
import jax

from l2l_opt import architecture, checkpoint

DEFAULT = "mixture"
# name -> sha256 of l2l_opt/pretrained/<name>.npz; a test recomputes each. Each default
# ships with its starting point, `<default>_start` (the untrained weights its meta-training
# started from), so that what meta-training added can be measured (`start_of`).
SHA256 = {
    "mixture": "25ee4e9789e47cef464fddcfa495d311aabebbf313a47eeacdc996314bdfe01d",
    "mixture_start": "195929e9928efa36fa21181c28f278fbb1f5a0a3a354dde7028b62f7316071e4",
    "mnist": "b9bbc1fc4c4151fda1be26827dbdc47ee4dcf0f6ff72234211ce750d2724a21f",
    "quadratic": "f2bef9db3d1e052662cfc3bb3679cdbae215170d379559aa02fd4ee5d55bd85a",
}


def start_of(name: str) -> str:
    """The name of the untrained starting point shipped with weights `name`."""
    return f"{name}_start"


def names() -> tuple[str, ...]:
    """The shipped weights' names."""
    return tuple(SHA256)


def path(name: str):
    """Path to the shipped file `name`.npz."""
    if name not in SHA256:
        raise ValueError(unknown_name_message(name))
    return importlib.resources.files(__name__).joinpath(f"{name}.npz")


def unknown_name_message(name: str) -> str:
    """ "no shipped weights named ...", with the closest shipped name and all of them."""
    close = difflib.get_close_matches(str(name), names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no shipped weights named {name!r}; {hint}shipped: {', '.join(names())}"


def sha256(file) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


@functools.cache
def load(name: str) -> tuple[hk.Params, architecture.LearnedOptimizer]:
    """``(theta, architecture)`` of the shipped weights `name`, loaded once and read-only."""
    file = path(name)
    digest = sha256(file)
    if digest != SHA256[name]:
        raise checkpoint.CheckpointError(
            f"{file}: sha256 {digest} does not match the expected {SHA256[name]}; "
            "the installed package is damaged, reinstall l2l-opt"
        )
    theta, arch = checkpoint.load_weights(file)
    for arr in jax.tree.leaves(theta):
        arr.setflags(write=False)
    return theta, arch
