"""The hand rule alone: the shipped default's weights with the network's contribution
removed (its magnitude head's weights set to zero, the bias kept), leaving Adam's features,
the fixed decay and the gain with its hand-set numbers. The results page reports it beside
the default, so that what the network adds shows cell by cell.

  python -m experiments.hand_rule runs/mixture_hand_rule.npz
  l2l-opt evaluate --suite default --weights mixture --weights runs/mixture_hand_rule.npz
"""

import argparse

import numpy as np

from l2l_opt import checkpoint, pretrained


def hand_rule(name: str = pretrained.DEFAULT):
    """``(theta, architecture)`` of shipped weights `name` with ``magnitude/w`` zeroed."""
    theta, arch = pretrained.load(name)
    theta = {module: dict(params) for module, params in theta.items()}
    theta["magnitude"]["w"] = np.zeros_like(theta["magnitude"]["w"])
    return theta, arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the weights file to write")
    parser.add_argument("--weights", default=pretrained.DEFAULT, help="shipped weights")
    args = parser.parse_args()
    theta, arch = hand_rule(args.weights)
    info = {"derived_from": args.weights, "change": "magnitude/w set to zero: the hand rule"}
    checkpoint.save_weights(args.out, theta, arch, info)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
