"""Scoring meta-trained weights on a problem family's validation instances, against tuned
Adam: for choosing a run's checkpoint, and for the report at its end."""

import math
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from l2l_opt import evaluate
from l2l_opt.problem import Mixture, Problem, as_mixture


class Validator(NamedTuple):
    """A family's validation instances, with tuned Adam's score on each member.

    The score of an optimizer is the geometric mean over the members of its mean loss over
    the last 10% of the member's horizon (on the validation instances) over tuned Adam's:
    below 1, it beats tuned Adam.
    """

    members: tuple[Problem, ...]
    keys: jax.Array  # [num_val] validation instance keys
    adam: tuple[float, ...]  # per member: tuned Adam's mean tail loss
    adam_learning_rate: tuple[float, ...]

    def losses_of_weights(self, arch: Any) -> Any:
        """``theta -> per-member losses`` of ``arch.opt(theta)``, compiled once per member (for
        scoring a run's checkpoints)."""
        runs = [
            jax.jit(
                lambda theta, k, d, p=p: evaluate.tail_mean(
                    evaluate.loss_curves(p, arch.opt(theta), k, p.horizon, d)
                )
            )
            for p in self.members
        ]

        def losses(theta):
            return [
                float(np.mean(np.asarray(run(theta, self.keys, p.data), np.float64)))
                for run, p in zip(runs, self.members, strict=True)
            ]

        return losses


def ratio_to_adam(losses: list[float], adam: tuple[float, ...]) -> float:
    """Geometric mean over the members of `losses` over tuned Adam's (inf if any is not
    finite or not positive)."""
    pairs = zip(losses, adam, strict=True)
    logs = [math.log(a / b) if a > 0 and b > 0 else math.nan for a, b in pairs]
    if not all(math.isfinite(x) for x in logs):
        return math.inf
    return math.exp(sum(logs) / len(logs))


def validator(problem: Problem | Mixture, num_val: int, seed: int = 0) -> Validator:
    """Tunes Adam's learning rate on `num_val` validation instances of each member of
    `problem` (at its horizon), the instances that `l2l-opt compare` tunes on."""
    if not isinstance(num_val, int) or isinstance(num_val, bool) or num_val < 1:
        raise ValueError(f"num_val={num_val!r} is invalid: must be an integer >= 1")
    members = tuple(p for p, _ in as_mixture(problem))
    keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num_val)
    scores, rates = [], []
    for p in members:
        tuned = evaluate.tune_learning_rate(p, optax.adam, keys, p.horizon)
        scores.append(float(np.min(tuned.scores)))
        rates.append(tuned.learning_rate)
    return Validator(members, keys, tuple(scores), tuple(rates))


def report(v: Validator, rows: dict[str, Any]) -> tuple[str, list[str]]:
    """A table of each optimizer's validation loss per member and its score, and warnings
    for the first row (the run's result) where it is worse than tuned Adam or than any other
    row (the run's start).

    Args:
      v: the validator.
      rows: ``{label: per-member losses}``; the first is the result.
    """
    names = [p.name for p in v.members]
    lines = [f"validation ({len(v.keys)} instances per problem; mean loss over the last 10%):"]
    head = ["optimizer", *names, "/ tuned Adam"]
    table = [head, ["tuned Adam", *(f"{a:.4g}" for a in v.adam), "1"]]
    scores = {label: ratio_to_adam(list(losses), v.adam) for label, losses in rows.items()}
    for label, losses in rows.items():
        table.append([label, *(f"{x:.4g}" for x in losses), f"{scores[label]:.3g}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines += ["  " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    result, *others = rows
    warnings = []
    if not scores[result] < 1:
        warnings.append(
            f"the result ({result}) is no better than tuned Adam on validation "
            f"({scores[result]:.3g}x): train longer (--time-budget), or use tuned Adam"
        )
    for other in others:
        if not scores[result] < scores[other]:
            warnings.append(
                f"the result ({result}) is no better than {other} on validation "
                f"({scores[result]:.3g}x against {scores[other]:.3g}x tuned Adam's loss)"
            )
    return "\n".join(lines), warnings
