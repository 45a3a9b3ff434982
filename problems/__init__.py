"""The optimizee suite, installed as `l2l_opt.problems`: problems and task families by name.

The library takes `l2l_opt.Problem` objects; names are this suite's, for the command line
and the experiments. Register your own with `register` (or pass ``--problem module:factory``
to the CLI).
"""

import difflib
import functools
import itertools
from collections.abc import Callable

from . import base, datasets
from .base import Problem, num_params
from .char_lstm import char_lstm
from .logistic import logistic
from .mnist_conv import mnist_conv
from .mnist_mlp import ACTIVATIONS, mnist_mlp
from .quadratic import quadratic
from .rosenbrock import rosenbrock
from .square import square
from .tiny_transformer import tiny_transformer

_REGISTRY: dict[str, Callable[[], Problem]] = {}


def register(name: str, factory: Callable[[], Problem]) -> None:
    """Registers ``factory() -> Problem`` under `name` (for ``--problem name``).

    Raises:
      ValueError: `name` is taken, or is not a plain identifier.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"problem name {name!r} must be an identifier")
    if name in _REGISTRY or name in ALIASES or name in FAMILIES:
        raise ValueError(f"a problem or family named {name!r} is already registered")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    _REGISTRY[name] = factory


# Short names for the paper's settings.
ALIASES = {
    "mnist_mlp": "mnist_mlp_h20_d1_sigmoid",
    "char_lstm": "char_lstm_h64_s32",
    "tiny_transformer": "tiny_transformer_l1_s32",
}

# Task families: weighted mixtures of problems whose shapes differ (each gets its own vmap).
# Within a member, every instance is new: quadratics draw W and y, the "random" MLPs their
# activation, and all draw a fresh init and data order.
FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "mlp_family": tuple(
        (f"mnist_mlp_h{h}_d{d}_random", 1.0) for h, d in itertools.product((20, 40), (1, 2))
    ),
    # Noisy gradients (batch 8) and many small tensors (a layer norm's scale and offset per
    # hidden layer), as in the held-out transformer, char-LSTM and conv net, on MLPs.
    "noisy_mlp_family": tuple(
        (f"mnist_mlp_h{h}_d{d}_random_ln_b8", 1.0) for h, d in itertools.product((20, 40), (1, 2))
    ),
    "char_lstm_family": tuple(
        (f"char_lstm_h{h}_s{s}", 1.0) for h, s in itertools.product((64, 128), (16, 32))
    ),
    "transformer_family": tuple(
        (f"tiny_transformer_l{n}_s{s}", 1.0) for n, s in itertools.product((1, 2), (16, 32))
    ),
}


register("quadratic", quadratic)
register("quadratic_uniform", functools.partial(quadratic, distribution="uniform"))
register("quadratic_illcond", functools.partial(quadratic, condition=1e3))
register("square", square)
register("rosenbrock", rosenbrock)
register("logistic", logistic)
register("mnist_conv", mnist_conv)
register("mnist_conv_bn", functools.partial(mnist_conv, batch_norm=True))
# A small conv net (4 channels, batch 16) for quick CPU runs of the conv experiment.
register("mnist_conv_tiny", functools.partial(mnist_conv, channels=4, batch_size=16))
for _h, _d, _a in itertools.product((20, 40), (1, 2), (*ACTIVATIONS, "random")):
    register(f"mnist_mlp_h{_h}_d{_d}_{_a}", functools.partial(mnist_mlp, _h, _d, _a))
for _h, _d in itertools.product((20, 40), (1, 2)):
    register(
        f"mnist_mlp_h{_h}_d{_d}_random_ln_b8",
        functools.partial(mnist_mlp, _h, _d, "random", batch_size=8, layer_norm=True),
    )
# A wider MLP, for evaluation suites (no training family has it).
register("mnist_mlp_h128_d1_relu", functools.partial(mnist_mlp, 128, 1, "relu"))
for _h, _s in itertools.product((64, 128), (16, 32)):
    register(f"char_lstm_h{_h}_s{_s}", functools.partial(char_lstm, hidden=_h, seq_len=_s))
for _l, _s in itertools.product((1, 2), (16, 32)):
    register(
        f"tiny_transformer_l{_l}_s{_s}",
        functools.partial(tiny_transformer, layers=_l, seq_len=_s),
    )


def names() -> tuple[str, ...]:
    """Registered problem names (aliases included), families excluded."""
    return (*ALIASES, *_REGISTRY)


@functools.cache
def get(name: str) -> Problem:
    """The registered problem `name` (or alias), with its default settings.

    Problems that carry data sets load them here, once per process.
    """
    resolved = ALIASES.get(name, name)
    if resolved not in _REGISTRY:
        raise ValueError(unknown_problem_message(name))
    return _REGISTRY[resolved]()


def unknown_problem_message(name: str) -> str:
    """'unknown problem' with the closest registered name or family, then where to look."""
    close = difflib.get_close_matches(str(name), [*names(), *ALIASES, *FAMILIES], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown problem {name!r}{hint} (`l2l-opt problems` lists them all)"


def parse_mixture(spec: str) -> tuple[tuple[str, float], ...]:
    """``"a=2,b=1"`` -> ``(("a", 2.0), ("b", 1.0))``; a family name expands to its members.

    A plain name has weight 1. Raises ValueError naming the bad part.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("must be a problem, family, or 'name=weight,...' mixture")
    out: list[tuple[str, float]] = []
    for part in spec.split(","):
        name, _, weight_text = part.strip().partition("=")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(f"weight {weight_text!r} of {name!r} is not a number") from None
        if not weight > 0 or weight == float("inf"):
            raise ValueError(f"weight of {name!r} must be a finite number > 0")
        if name in FAMILIES:
            total = sum(w for _, w in FAMILIES[name])
            out.extend((m, weight * w / total) for m, w in FAMILIES[name])
        elif ALIASES.get(name, name) in _REGISTRY:
            out.append((name, weight))
        else:
            raise ValueError(unknown_problem_message(name))
    if len({n for n, _ in out}) != len(out):
        raise ValueError("a problem appears twice in the mixture")
    return tuple(out)


def mixture(spec: str) -> tuple[tuple[Problem, float], ...]:
    """The problems of `spec` (see `parse_mixture`) with their weights, normalised."""
    pairs = parse_mixture(spec)
    total = sum(w for _, w in pairs)
    return tuple((get(name), w / total) for name, w in pairs)


__all__ = [
    "ALIASES",
    "FAMILIES",
    "Problem",
    "base",
    "datasets",
    "get",
    "mixture",
    "names",
    "num_params",
    "parse_mixture",
    "register",
]
