"""Learned-optimizer architectures: one interface, and the registry that names them."""

from typing import Any, ClassVar, Protocol

import haiku as hk
import optax
from jax.typing import ArrayLike

from l2l_opt.config import ConfigError
from l2l_opt.lstm_config import LSTMOptConfig
from l2l_opt.mlp import MLPOptConfig
from l2l_opt.tensor_lstm import TensorLSTMConfig


class LearnedOptimizer(Protocol):
    """What meta-training, checkpoints, shipped weights and the CLI need of an architecture.

    An implementation is a frozen dataclass whose fields are its architecture (saved with
    its weights); runtime options that do not change the function it computes (kernels,
    block sizes, state dtypes) are keyword arguments of `opt` and are not saved.
    """

    name: ClassVar[str]  # registry name, saved in weights files

    def init(self, key: ArrayLike) -> hk.Params:
        """Fresh meta-parameters theta."""

    def opt(self, theta: hk.Params, **options: Any) -> optax.GradientTransformationExtraArgs:
        """The optimizer with weights `theta`; its updates are added to the params."""

    def runtime_options(self) -> tuple[str, ...]:
        """The keyword options `opt` takes beside the weights and learning rate: ``num_steps``
        (the run's horizon) where the architecture reads it, and options that change how, not
        what, it computes."""

    def check_theta(self, theta: hk.Params) -> None:
        """Raises ValueError unless `theta` fits this architecture."""

    def to_dict(self) -> dict[str, Any]:
        """The architecture's fields, as JSON-able values."""


ARCHITECTURES: dict[str, Any] = {
    cls.name: cls for cls in (LSTMOptConfig, MLPOptConfig, TensorLSTMConfig)
}
DEFAULT = "lstm"


def register(cls: Any) -> Any:
    """Adds an architecture class (with ``name``, ``from_dict`` and the `LearnedOptimizer`
    methods) to the registry, so that its weights files load; usable as a decorator."""
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r} needs a class attribute `name` (str)")
    ARCHITECTURES[cls.name] = cls
    return cls


def get(name: str) -> Any:
    """The architecture class registered as `name`."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def from_dict(name: str, config: dict[str, Any]) -> LearnedOptimizer:
    """The architecture `name` with the fields `config` (as saved by ``to_dict``)."""
    return get(name).from_dict(config)


def name_of(arch: Any) -> str:
    """The registry name of architecture object `arch`."""
    name = getattr(arch, "name", None)
    if not isinstance(name, str) or ARCHITECTURES.get(name) is not type(arch):
        raise TypeError(f"{arch!r} is not a registered architecture ({sorted(ARCHITECTURES)})")
    return name
