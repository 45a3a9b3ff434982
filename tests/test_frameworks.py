"""The learned optimizers in the training loops users write: Flax NNX, Equinox, Flax linen."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt

MLP_NET = l2l_opt.MLPOptConfig(hidden_size=8)
TENSOR_NET = l2l_opt.TensorLSTMConfig()
# The shipped weights and the untrained per-tensor LSTM (Adam with a gain) must descend;
# the untrained MLP (random weights) need only move finitely.
OPTIMIZERS = {
    "default": lambda: l2l_opt.learned_opt(),
    "mlp": lambda: l2l_opt.learned_opt(MLP_NET.init(jax.random.key(0)), config=MLP_NET),
    "tensor_lstm": lambda: l2l_opt.learned_opt(
        TENSOR_NET.init(jax.random.key(0)), config=TENSOR_NET
    ),
}
optimizers = pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
X = jax.random.normal(jax.random.key(1), (32, 4))


def _check(losses, make):
    assert np.all(np.isfinite(losses)) and len(set(losses)) == len(losses)
    if make is not OPTIMIZERS["mlp"]:
        assert losses[-1] < losses[0]


Y = X @ jnp.array([1.0, -2.0, 0.5, 0.0]) + 0.3


@optimizers
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "nnx.jit"])
def test_flax_nnx_optimizer(make, jit):
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 8, rngs=rngs)
            self.out = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))[:, 0]

    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make(), wrt=nnx.Param)

    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    traces = []

    def counted_step(model, optimizer):
        traces.append(1)  # runs once per trace, that is once per compilation
        return train_step(model, optimizer)

    step = nnx.jit(counted_step) if jit else train_step
    losses = [float(step(model, optimizer)) for _ in range(5)]
    _check(losses, make)
    assert int(optimizer.step[...]) == 5
    if jit:  # the state keeps init's structure, so that the step compiles once, not twice
        assert len(traces) == 1


@optimizers
def test_equinox_filtered_training_loop(make):
    """Equinox's filtered trees have None leaves where a model holds non-arrays."""
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(4, "scalar", 8, 1, key=jax.random.key(0))
    tx = make()
    state = tx.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state):
        loss_fn = lambda m: jnp.mean((jax.vmap(m)(X) - Y) ** 2)
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, loss

    losses = []
    for _ in range(5):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    _check(losses, make)


@optimizers
def test_flax_linen_train_state(make):
    linen = pytest.importorskip("flax.linen")
    train_state = pytest.importorskip("flax.training.train_state")
    model = linen.Dense(1)
    params = model.init(jax.random.key(0), X)
    ts = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=make())

    @jax.jit
    def step(ts):
        loss_fn = lambda p: jnp.mean((ts.apply_fn(p, X)[:, 0] - Y) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(ts.params)
        return ts.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(5):
        ts, loss = step(ts)
        losses.append(float(loss))
    _check(losses, make)
    assert int(ts.step) == 5


def test_optax_multi_transform_on_some_parameters_only():
    """The README's way to bound the cost: the learned optimizer on some leaves, Adam on the
    rest."""
    params = {"embed": jnp.ones((50, 4)), "head": jnp.ones((4,))}
    labels = {"embed": "adam", "head": "learned"}
    tx = optax.multi_transform({"adam": optax.adam(1e-3), "learned": l2l_opt.learned_opt()}, labels)
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    lstm_state = optax.tree.get(state.inner_states["learned"].inner_state, "lstm")
    assert isinstance(lstm_state[0].hidden["embed"], optax.MaskedNode)  # none for Adam's leaf
    hidden = l2l_opt.pretrained.load(l2l_opt.pretrained.DEFAULT)[1].hidden_size
    assert lstm_state[0].hidden["head"].shape == (hidden, 4)
