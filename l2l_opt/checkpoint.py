"""Weights and training checkpoints as ``.npz``: written atomically, read without pickle."""

import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

import haiku as hk
import jax
import numpy as np

from l2l_opt import architecture
from l2l_opt.config import ConfigError

FORMAT_VERSION = 1  # of weights files
# Of training-state checkpoints; 2: LSTM states of optimizees in flight are [H, N] (coordinates
# last, 2026-11-26), in version 1 they were [N, H]; 3: the estimator's per-task state, each
# optimizee's horizon and initial loss (2026-11-30).
STATE_VERSION = 3
WEIGHTS_FORMAT = "l2l_opt.weights"
STATE_FORMAT = "l2l_opt.train_state"
_VERSIONS = {WEIGHTS_FORMAT: FORMAT_VERSION, STATE_FORMAT: STATE_VERSION}
_META_KEY = "__meta__"
_KIND = {WEIGHTS_FORMAT: "weights file", STATE_FORMAT: "checkpoint"}


class CheckpointError(ValueError):
    """A weights or checkpoint file cannot be used; the message names the file and why."""


class CheckpointVersionError(CheckpointError):
    """A file of another format version; `version` is the file's (None if it has none)."""

    def __init__(self, message: str, version: Any):
        super().__init__(message)
        self.version = version


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Calls ``write(fileobj)`` on a temp file beside `path`, fsyncs, then renames it over `path`.

    The old file stays whole until the rename, so a crash at any point leaves either the
    old or the new file, never a partial one. Errors (disk full, no permission) are raised
    as `OSError` naming `path`, and the temp file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    # Fault injection for the crash tests: hold the half-done write open this many seconds.
    delay = float(os.environ.get("L2L_OPT_FAULT_WRITE_DELAY", "0"))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory
        )
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if delay:
                time.sleep(delay)
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from others
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temp_files(path: str | os.PathLike) -> list[str]:
    """Deletes temp files a killed `atomic_write` of `path` left behind; returns their names."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    stale = [n for n in os.listdir(directory) if n.startswith(base + ".") and n.endswith(".tmp")]
    for n in stale:
        os.unlink(os.path.join(directory, n))
    return stale


def _path_key(path) -> str:
    """``"module/param"`` style names for pytree paths."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten(tree: Any) -> dict[str, np.ndarray]:
    """``{"a/b/0": array}`` for every leaf of `tree`."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_key(p): np.asarray(v) for p, v in leaves}


def _save_npz(path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    payload = dict(arrays)
    payload[_META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **payload))


def _load_npz(path, expected_format: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads an npz with `allow_pickle=False` and checks its format and version."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":
        raise CheckpointError(f"{path}: not an l2l_opt {_KIND[expected_format]} (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: no {_META_KEY} entry; not an l2l_opt file")
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: format {got!r}, expected {expected_format!r}")
    if meta.get("version") != _VERSIONS[expected_format]:
        raise CheckpointVersionError(
            f"{path}: format version {meta.get('version')!r}, this l2l_opt reads version "
            f"{_VERSIONS[expected_format]}",
            meta.get("version"),
        )
    return arrays, meta


def _fill(path, template: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Puts `arrays` into the structure of `template`, checking names, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [_path_key(p) for p, _ in leaves]
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise CheckpointError(
            f"{path}: does not match the expected structure (missing {missing[:5]}, "
            f"unexpected {extra[:5]})"
        )
    out = []
    for name, (_, t) in zip(names, leaves, strict=True):
        a, want_shape, want_dtype = arrays[name], np.shape(t), np.asarray(t).dtype
        if a.shape != want_shape or a.dtype != want_dtype:
            raise CheckpointError(
                f"{path}: {name!r} is {a.dtype}{list(a.shape)}, expected "
                f"{want_dtype}{list(want_shape)}"
            )
        out.append(a)
    return jax.tree_util.tree_unflatten(treedef, out)


def save_weights(
    path: str | os.PathLike,
    theta: hk.Params,
    arch: architecture.LearnedOptimizer,
    info: dict[str, Any] | None = None,
) -> None:
    """Writes `theta` (as float32, ``"module/param"`` keys) with its architecture, atomically."""
    arrays = {k: v.astype(np.float32) for k, v in flatten(theta).items()}
    meta = {
        "format": WEIGHTS_FORMAT,
        "version": FORMAT_VERSION,
        "architecture": architecture.name_of(arch),
        "config": json.loads(json.dumps(arch.to_dict())),
        "info": info or {},
    }
    _save_npz(path, arrays, meta)


def load_weights(
    path: str | os.PathLike, expected: str | None = None
) -> tuple[hk.Params, architecture.LearnedOptimizer]:
    """Reads weights saved by `save_weights`: ``(theta, architecture)``, never executing code.

    Files without an ``architecture`` entry (written before there was a choice) hold the
    LSTM's weights.

    Args:
      path: the ``.npz`` file.
      expected: if given, the architecture name the caller needs.

    Raises:
      CheckpointError: the file is missing, not a weights file, truncated, corrupt, of
        another format, version or architecture, or its arrays do not fit its config.
    """
    arrays, meta = _load_npz(path, WEIGHTS_FORMAT)
    name = meta.get("architecture", architecture.DEFAULT)
    if expected is not None and name != expected:
        raise CheckpointError(
            f"{os.fspath(path)}: holds weights of the {name!r} architecture, not {expected!r}"
        )
    try:
        arch = architecture.from_dict(name, meta.get("config", {}))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{os.fspath(path)}: bad config ({e})") from e
    shapes = jax.eval_shape(arch.init, jax.random.PRNGKey(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    return _fill(path, template, arrays), arch


def read_weights_info(path: str | os.PathLike) -> dict[str, Any]:
    """The `info` dict saved with weights (how they were trained), checking the format."""
    return _load_npz(path, WEIGHTS_FORMAT)[1].get("info", {})


def save_state(path: str | os.PathLike, state: Any, info: dict[str, Any]) -> None:
    """Writes a training-state pytree and JSON-able `info` atomically."""
    meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "info": info}
    _save_npz(path, flatten(state), meta)


def read_state_info(path: str | os.PathLike) -> dict[str, Any]:
    """The `info` dict of a state saved by `save_state`, checking format and version."""
    return _load_npz(path, STATE_FORMAT)[1].get("info", {})


def load_state(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
    """Reads a state saved by `save_state` into the structure of `template`: ``(state, info)``."""
    arrays, meta = _load_npz(path, STATE_FORMAT)
    return _fill(path, template, arrays), meta.get("info", {})
