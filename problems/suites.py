"""Evaluation suites by name: tasks of the problem suite, their horizons, and their split.

``train`` tasks are the families meta-training may use; ``heldout`` tasks no meta-training
run may touch (the transformer, the char-LSTM, the conv net, the ill-conditioned quadratic
and two MLP shapes no training family has).
"""

from l2l_opt.suite import Task

from . import get

# name -> ((problem name, (short horizon, long horizon), split[, instances]), ...); instances
# (default 1) multiplies the run's test and validation instances for that task's cells.
SUITES: dict[str, tuple[tuple, ...]] = {
    "default": (
        ("mnist_mlp_h20_d1_sigmoid", (100, 1000), "train"),
        ("mnist_mlp_h40_d1_relu", (200, 1000), "train"),
        ("mnist_mlp_h20_d2_tanh", (200, 1000), "train"),
        ("logistic", (100, 1000), "train"),
        ("quadratic", (100, 1000), "train"),
        # Which of its two valleys a run ends in is a lottery (loss 3.99 against 1e-3 or
        # less): with 5 instances a cell's ratio to tuned Adam swings a hundredfold. Ten
        # times the instances (50 test, 30 validation) cost seconds on this 10-dim function.
        ("rosenbrock", (300, 2000), "train", 10),
        ("mnist_mlp_h40_d2_elu", (200, 1000), "heldout"),
        ("mnist_mlp_h128_d1_relu", (200, 1000), "heldout"),
        ("quadratic_illcond", (300, 2000), "heldout"),
        ("mnist_conv_tiny", (200, 1000), "heldout"),
        ("char_lstm_h64_s16", (200, 1000), "heldout"),
        ("tiny_transformer_l1_s16", (200, 1000), "heldout"),
    ),
    # Seconds: checks that an installation runs the suite (and the tests use it).
    "smoke": (
        ("quadratic", (10,), "train"),
        ("quadratic_illcond", (10,), "heldout"),
    ),
    # For choosing checkpoints and variants: training families only, short and longer
    # horizons; run it with a seed other than the reported one (``--seed 1``).
    "validation": (
        ("quadratic", (50, 500), "train"),
        ("mnist_mlp_h20_d1_sigmoid", (50, 300), "train"),
        ("logistic", (100, 1000), "train"),
        ("rosenbrock", (300, 1000), "train"),
        ("mnist_mlp_h40_d1_relu", (200, 1000), "train"),
        ("mnist_mlp_h20_d2_tanh", (200, 1000), "train"),
        # The noisy family (batch 8, layer norm): how the step size holds up on noisy
        # gradients and small tensors, which the held-out transformer and conv net have.
        ("mnist_mlp_h20_d2_random_ln_b8", (200, 1000), "train"),
    ),
    # Rosenbrock's validation cells alone, to run on more instances (``--seed 1 --num-test
    # 25``): with 5, one run that ends in the function's other valley (loss 3.99 against
    # 1e-3 or less) moves a cell's ratio to tuned Adam a hundredfold.
    "validation_rosenbrock": (("rosenbrock", (300, 1000), "train"),),
    # A few minutes on 2 CPU cores (`l2l-opt evaluate --quick`'s help says how many): one
    # task per kind, one short horizon each.
    "quick": (
        ("quadratic", (200,), "train"),
        ("mnist_mlp_h20_d1_sigmoid", (100,), "train"),
        ("quadratic_illcond", (200,), "heldout"),
        ("tiny_transformer_l1_s16", (200,), "heldout"),
    ),
}


def tasks(name: str) -> dict[str, Task]:
    """The suite `name` as `l2l_opt.suite.Task` objects."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return {p: Task(get(p), *rest) for p, *rest in SUITES[name]}


def training_problems(name: str = "default") -> tuple[str, ...]:
    """The problems of suite `name` that meta-training may use."""
    return tuple(p for p, _, split, *_ in SUITES[name] if split == "train")
