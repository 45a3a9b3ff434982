import json
import os
import zipfile

import jax
import numpy as np
import pytest

import l2l_opt
from l2l_opt import checkpoint, lstm_network, problems
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.lstm_config import LSTMOptConfig

from .conftest import TINY_NET


@pytest.fixture
def weights_file(tmp_path, tiny_theta):
    path = tmp_path / "w.npz"
    checkpoint.save_weights(path, tiny_theta, TINY_NET, {"note": "test"})
    return path


def test_weights_round_trip(weights_file, tiny_theta):
    theta, config = checkpoint.load_weights(weights_file)
    assert config == TINY_NET
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(tiny_theta), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32
    with np.load(weights_file, allow_pickle=False) as z:
        assert "lstm_0/linear/w" in z.files and "head/b" in z.files


def test_learned_opt_loads_a_weights_path(weights_file, tiny_theta):
    params = {"x": np.ones(3, np.float32)}
    a, _ = l2l_opt.learned_opt(str(weights_file)).update(
        params, l2l_opt.learned_opt(str(weights_file)).init(params)
    )
    tx = l2l_opt.learned_opt(tiny_theta, config=TINY_NET)
    b, _ = tx.update(params, tx.init(params))
    np.testing.assert_array_equal(a["x"], b["x"])
    with pytest.raises(ValueError, match="the given config is LSTMOptConfig"):
        l2l_opt.learned_opt(weights_file, config=LSTMOptConfig())


def _rewrite(path, mutate):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    mutate(arrays)
    np.savez(path, **arrays)


def _set_meta(arrays, **changes):
    meta = json.loads(str(arrays["__meta__"]))
    meta.update(changes)
    arrays["__meta__"] = np.array(json.dumps(meta))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
        (lambda p: p.write_bytes(b"\x00garbage" * 100), "not an l2l_opt weights file"),
        (lambda p: p.write_text('{"json": "not npz"}'), "not an l2l_opt weights file"),
        (lambda p: np.savez(p, x=np.zeros(3)), "not an l2l_opt file"),
        (lambda p: _rewrite(p, lambda a: _set_meta(a, version=99)), "format version 99"),
        (lambda p: _rewrite(p, lambda a: _set_meta(a, format="other")), "format 'other'"),
        (
            lambda p: _rewrite(
                p, lambda a: _set_meta(a, config={"hidden_size": 5, "num_layers": 1})
            ),
            "is float32",
        ),
        (lambda p: _rewrite(p, lambda a: _set_meta(a, config={"hidden_size": -1})), "bad config"),
        (lambda p: _rewrite(p, lambda a: a.pop("head/w")), "missing ['head/w']"),
        (
            lambda p: _rewrite(p, lambda a: a.update({"head/w": a["head/w"].astype(np.float64)})),
            "float64",
        ),
        (lambda p: os.unlink(p), "file not found"),
    ],
    ids=[
        "truncated",
        "garbage",
        "other-format-json",
        "foreign-npz",
        "future-version",
        "other-kind",
        "other-network-shape",
        "invalid-config",
        "missing-array",
        "wrong-dtype",
        "missing-file",
    ],
)
def test_bad_weights_files_give_one_line_errors_naming_the_file(weights_file, damage, message):
    damage(weights_file)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_weights(weights_file)
    msg = str(e.value)
    assert str(weights_file) in msg and message in msg and "\n" not in msg


def test_object_arrays_are_refused_not_unpickled(weights_file):
    _rewrite(weights_file, lambda a: a.update({"evil": np.array([object()], dtype=object)}))
    with pytest.raises(CheckpointError, match="not a readable"):
        checkpoint.load_weights(weights_file)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write(path, lambda f: f.write(b"old"))

    def failing(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        checkpoint.atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temp file left behind


def test_atomic_write_to_unwritable_directory_names_the_path(tmp_path):
    target = tmp_path / "missing_dir" / "f.bin"
    with pytest.raises(OSError, match="cannot write .*missing_dir"):
        checkpoint.atomic_write(target, lambda f: f.write(b"x"))


def test_state_round_trip_and_structure_check(tmp_path):
    config = l2l_opt.MetaTrainConfig(num_tasks=2, unroll_length=5, horizon=10, net=TINY_NET)
    problem = problems.get("quadratic")
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, problem)
    path = tmp_path / "c.npz"
    checkpoint.save_state(path, state, {"step": 0})
    loaded, info = checkpoint.load_state(path, state)
    assert info == {"step": 0}
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    other = l2l_opt.meta_train_init(
        jax.random.PRNGKey(0),
        config.__class__(num_tasks=3, unroll_length=5, horizon=10, net=TINY_NET),
        problem,
    )
    with pytest.raises(CheckpointError, match="expected"):
        checkpoint.load_state(path, other)
    with pytest.raises(CheckpointError, match="format 'l2l_opt.train_state'"):
        checkpoint.load_weights(path)


def test_npz_is_a_zip_with_no_pickle(weights_file):
    with zipfile.ZipFile(weights_file) as z:
        for name in z.namelist():
            with z.open(name) as f:
                header = f.read(128)
            assert b"'descr': '|O'" not in header


def test_shapes_come_from_code(weights_file):
    theta, _ = checkpoint.load_weights(weights_file)
    want = lstm_network.theta_shapes(TINY_NET)
    assert jax.tree.map(lambda a: a.shape, theta) == jax.tree.map(lambda s: s.shape, want)


def test_files_without_an_architecture_entry_hold_the_lstms(weights_file, tiny_theta):
    """Weights written before there was a choice of architecture (the shipped files too)."""

    def drop(arrays):
        meta = json.loads(str(arrays["__meta__"]))
        del meta["architecture"]
        arrays["__meta__"] = np.array(json.dumps(meta))

    _rewrite(weights_file, drop)
    theta, arch = checkpoint.load_weights(weights_file)
    assert arch == TINY_NET


def test_a_text_file_is_not_a_weights_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"notes.txt: not an l2l_opt weights file"):
        l2l_opt.learned_opt(str(path))
