"""Distil a coordinatewise LSTM's per-coordinate step magnitude into a smaller one.

The shipped networks have `gain_only` and a magnitude head: each coordinate's step is the
skip path's Adam step times ``exp(a_t)``, with ``a_t = w . h_t + b`` read from the LSTM's
hidden state, and everything else (decay, per-tensor gain) is the same fixed rule. So a
smaller network that reproduces the teacher's ``a_t`` from the same inputs reproduces its
steps. Two commands:

  python -m experiments.distill record DATA.npz --teacher TEACHER.npz [--instances 4]
  python -m experiments.distill train DATA.npz OUT.npz --teacher TEACHER.npz [--hidden 2] \
      [--iters 2000] [--lr 1e-2] [--batch 2048] [--seed 1]

``record`` runs the teacher (`learned_opt`) on instances of the six training families of
the `default` suite, drawn from a training stream (never the validation or test streams),
and keeps the gradient sequences of 256 random coordinates per run, in three groups: not
told the horizon (2,000 steps), told T = 2,000, told T = 300. ``train`` computes every
sequence's Adam features and progress inputs, the teacher's ``a_t`` along them, and fits the
student (the teacher's config with ``hidden_size`` H; its skip path and the magnitude's bias
start as the teacher's, the skip path stays fixed) by backpropagation through the whole
sequences: Adam on the mean squared error of ``a_t`` over steps and coordinates, a batch of
coordinates of one group per step, groups in turn, the learning rate on a cosine decay to
5%. Every 100 steps it prints each group's error over all its coordinates and writes OUT.npz.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import l2l_opt
from l2l_opt import checkpoint, common, lstm_network, preprocessing, problems, transform

FAMILIES = (
    "mnist_mlp_h20_d1_sigmoid",
    "mnist_mlp_h40_d1_relu",
    "mnist_mlp_h20_d2_tanh",
    "logistic",
    "quadratic",
    "rosenbrock",
)
TRAIN_STREAM = 3_000_017  # neither evaluate.VALIDATION_STREAM nor evaluate.TEST_STREAM
COORDINATES = 256
# (name, num_steps told or None, steps run)
GROUPS = (("free2000", None, 2000), ("told2000", 2000, 2000), ("told300", 300, 300))


def record_run(teacher, name: str, num_steps, steps: int, key: jax.Array) -> np.ndarray:
    """One run of the teacher on an instance of `name`: the gradients of `COORDINATES`
    random coordinates (of all the parameters, flattened) at every step, ``[steps, C]``."""
    problem = problems.get(name)
    opt = l2l_opt.learned_opt(teacher, num_steps=num_steps)
    k_instance, k_init, k_batches, k_coords = jax.random.split(key, 4)
    instance = problem.sample_instance(k_instance)
    x0 = problem.init_params(k_init, instance)
    n = ravel_pytree(x0)[0].size
    if n >= COORDINATES:
        idx = jax.random.choice(k_coords, n, (COORDINATES,), replace=False)
    else:
        idx = jax.random.randint(k_coords, (COORDINATES,), 0, n)

    def step(carry, k):
        params, state = carry
        batch = problem.sample_batch(k, instance, problem.data)
        loss, grads = jax.value_and_grad(problem.loss)(params, instance, batch)
        updates, state = opt.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), ravel_pytree(grads)[0][idx]

    run = lambda: jax.lax.scan(step, (x0, opt.init(x0)), jax.random.split(k_batches, steps))[1]
    return np.asarray(jax.jit(run)())


def record(args) -> None:
    base = jax.random.fold_in(jax.random.PRNGKey(0), TRAIN_STREAM)
    out = {}
    for gi, (group, num_steps, steps) in enumerate(GROUPS):
        seqs = []
        for fi, name in enumerate(FAMILIES):
            for i in range(args.instances):
                key = jax.random.fold_in(base, (gi * 100 + fi) * 1000 + i)
                seqs.append(record_run(args.teacher, name, num_steps, steps, key))
                print(f"{group} {name} {i}", flush=True)
        out[group] = np.stack(seqs)
    checkpoint.atomic_write(args.data, lambda f: np.savez(f, **out))
    print(f"wrote {args.data}")


def features(g_TxC: jax.Array, num_steps, config) -> jax.Array:
    """The network's inputs at every step, ``[T, F + G, C]``: Adam features of the gradients
    (moments from zero) and the progress inputs of step t (told `num_steps`, or not)."""

    def step(carry, g):
        m, v, t = carry
        t = t + 1
        m, v = preprocessing.adam_moments(g, m, v, config.beta1, config.beta2)
        x = preprocessing.adam_features(g, m, v, t, config.beta1, config.beta2)
        shared = common.global_inputs(t, num_steps, config)
        full = jnp.concatenate([x, jnp.broadcast_to(shared[:, None], (shared.size, g.size))])
        return (m, v, t), full

    zeros = jnp.zeros(g_TxC.shape[1])
    return jax.lax.scan(step, (zeros, zeros, jnp.zeros([], jnp.int32)), g_TxC)[1]


def magnitudes(theta, config, feats_TxFxC: jax.Array) -> jax.Array:
    """The magnitude head's ``a_t = w . h_t + b`` along the inputs, ``[T, C]``."""
    w, b = theta["magnitude"]["w"][:, 0], theta["magnitude"]["b"][0]

    def step(state, x):
        _, state = lstm_network.apply_reference(theta, x, state, config)
        return state, w @ state[-1].hidden + b

    state0 = lstm_network.initial_state(config, feats_TxFxC.shape[-1])
    return jax.lax.scan(step, state0, feats_TxFxC)[1]


def teacher_path(teacher: str):
    """The file of `teacher`, a shipped name or a path."""
    return l2l_opt.pretrained.path(teacher) if teacher in l2l_opt.pretrained.names() else teacher


def train(args) -> None:
    t_theta, t_config = transform.resolve_weights(args.teacher)
    if not (t_config.gain_only and t_config.exp_mult and not t_config.magnitude_cell):
        raise SystemExit(f"{args.teacher}: needs gain_only weights with a plain magnitude head")
    s_config = dataclasses.replace(t_config, hidden_size=args.hidden)
    data = np.load(args.data)
    pooled = {}
    for group, num_steps, _ in GROUPS:
        g = np.nan_to_num(data[group], nan=0.0, posinf=0.0, neginf=0.0)  # [S, T, C]
        s, t, c = g.shape
        g = jnp.asarray(np.transpose(g, (1, 0, 2)).reshape(t, s * c))
        f = jax.jit(lambda g, n=num_steps: features(g, n, t_config))(g)
        pooled[group] = (f, jax.jit(lambda f: magnitudes(t_theta, t_config, f))(f))

    theta = s_config.init(jax.random.PRNGKey(args.seed))
    theta["skip"] = t_theta["skip"]
    theta["magnitude"]["b"] = t_theta["magnitude"]["b"]
    trainable = jax.tree.map(lambda _: True, theta)
    trainable["skip"] = jax.tree.map(lambda _: False, theta["skip"])
    schedule = optax.cosine_decay_schedule(args.lr, args.iters, 0.05)
    opt = optax.masked(optax.adam(schedule), trainable)
    opt_state = opt.init(theta)

    def loss_fn(theta, f, a):
        return jnp.mean((magnitudes(theta, s_config, f) - a) ** 2)

    @jax.jit
    def update(theta, opt_state, f, a):
        loss, grads = jax.value_and_grad(loss_fn)(theta, f, a)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss

    # Provenance: the teacher's own record (how it was meta-trained, on which problems) and
    # the problems the distillation ran on, all training families.
    teacher_info = checkpoint.read_weights_info(teacher_path(args.teacher))
    info = {
        "problem": ",".join(FAMILIES),
        "distilled_from": teacher_info,
        "distill": {k: getattr(args, k) for k in ("iters", "lr", "batch", "seed")},
    }
    full_loss = jax.jit(loss_fn)
    rng = np.random.default_rng(args.seed)
    names = [group for group, _, _ in GROUPS]
    start = time.time()
    for it in range(args.iters + 1):
        if it % 100 == 0:
            errors = " ".join(f"{k} {float(full_loss(theta, *pooled[k])):.5f}" for k in names)
            print(f"iter {it} {time.time() - start:.0f}s  mean squared error: {errors}", flush=True)
            checkpoint.save_weights(
                args.out, jax.tree.map(np.asarray, theta), s_config, dict(info, iter=it)
            )
        if it == args.iters:
            break
        f, a = pooled[names[it % len(names)]]
        cols = rng.choice(f.shape[-1], min(args.batch, f.shape[-1]), replace=False)
        theta, opt_state, _ = update(theta, opt_state, f[:, :, cols], a[:, cols])
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("data")
    rec.add_argument("--teacher", required=True, help="weights file or shipped name")
    rec.add_argument("--instances", type=int, default=4, help="per family and group")
    tr = sub.add_parser("train")
    tr.add_argument("data")
    tr.add_argument("out")
    tr.add_argument("--teacher", required=True, help="weights file or shipped name")
    tr.add_argument("--hidden", type=int, default=2)
    tr.add_argument("--iters", type=int, default=2000)
    tr.add_argument("--lr", type=float, default=1e-2)
    tr.add_argument("--batch", type=int, default=2048)
    tr.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "record":
        record(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
