"""Data sets: the embedded MNIST subset, full MNIST (IDX files, optional download), text."""

import functools
import gzip
import hashlib
import importlib.resources
import os
import pathlib
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# The standard MNIST IDX files (Y. LeCun, C. Cortes, C. Burges) and their sha256.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
EMBEDDED_MNIST = "mnist_5k.npz"
EMBEDDED_MNIST_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
EMBEDDED_TEST_PER_CLASS = 100  # the last 100 images of each class are the test split


class DataError(RuntimeError):
    """A data set is missing, corrupt or cannot be fetched; the message says what to do."""


def data_dir() -> pathlib.Path:
    """``$L2L_DATA_DIR``, else ``$XDG_CACHE_HOME/l2l_opt``, else ``~/.cache/l2l_opt``."""
    if os.environ.get("L2L_DATA_DIR"):
        return pathlib.Path(os.environ["L2L_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "l2l_opt"


def mnist_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
    return (pathlib.Path(root) if root is not None else data_dir()) / "mnist"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parses a (gzipped) IDX file of unsigned bytes: ``[n]`` labels or ``[n, rows, cols]``."""
    path = pathlib.Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims}, but holds {body.size} bytes")
    return body.reshape(dims)


def download_mnist(
    root: str | os.PathLike | None = None,
    base_url: str = MNIST_URL,
    files: dict[str, str] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Downloads the MNIST IDX files into ``mnist_dir(root)``, checking each sha256.

    Each file streams into ``NAME.part``; an interrupted download resumes from there (HTTP
    Range), and a complete, verified file is renamed into place atomically. A checksum
    mismatch deletes the part file and raises `DataError`.

    Args:
      root: data directory (default `data_dir()`).
      base_url: where the files are; ``base_url + NAME``.
      files: ``{name: sha256}`` (default `MNIST_FILES`).
      progress: called as ``progress(name, bytes_done, total_or_None)``.
      timeout: seconds per network operation.

    Returns:
      The directory holding the files.
    """
    files = MNIST_FILES if files is None else files
    target = mnist_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        final = target / name
        if final.exists() and _sha256(final) == digest:
            continue
        part = target / (name + ".part")
        done = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(base_url.rstrip("/") + "/" + name)
        if done:
            request.add_header("Range", f"bytes={done}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if done and response.status != 206:  # server ignored Range: start over
                    done = 0
                length = response.headers.get("Content-Length")
                total = done + int(length) if length is not None else None
                with open(part, "ab" if done else "wb") as f:
                    for chunk in iter(lambda: response.read(1 << 16), b""):
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(name, done, total)
                    f.flush()
                    os.fsync(f.fileno())
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"downloading {request.full_url} failed ({e}); {done} bytes kept in {part}, "
                "run the download again to resume"
            ) from e
        if total is not None and done < total:
            raise DataError(
                f"downloading {request.full_url} stopped at {done} of {total} bytes; "
                "run the download again to resume"
            )
        got = _sha256(part)
        if got != digest:
            part.unlink()
            raise DataError(
                f"{request.full_url}: sha256 {got} does not match the expected {digest}; "
                "the file was deleted"
            )
        os.replace(part, final)
    return target


def load_mnist_full(
    root: str | os.PathLike | None = None, files: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """The standard MNIST from ``mnist_dir(root)``, each file checked against its sha256.

    Returns:
      ``{"train_images": uint8[60000, 28, 28], "train_labels": uint8[60000],
      "test_images": ..., "test_labels": ...}``.

    Raises:
      DataError: a file is missing or does not match its checksum.
    """
    files = MNIST_FILES if files is None else files
    directory = mnist_dir(root)
    missing = [n for n in files if not (directory / n).exists()]
    if missing:
        raise DataError(
            f"MNIST not found at {directory} (missing {', '.join(missing)}); "
            "run `l2l-opt data download mnist` or set L2L_DATA_DIR"
        )
    for name, digest in files.items():
        got = _sha256(directory / name)
        if got != digest:
            raise DataError(
                f"{directory / name}: sha256 {got} does not match the expected {digest}; "
                "delete it and run `l2l-opt data download mnist`"
            )
    arrays = {name: read_idx(directory / name) for name in files}
    by_role = {}
    for name, arr in arrays.items():
        split = "train" if name.startswith("train") else "test"
        kind = "images" if "images" in name else "labels"
        by_role[f"{split}_{kind}"] = arr
    return by_role


def load_mnist_embedded() -> dict[str, np.ndarray]:
    """The 5,000-image MNIST subset shipped in the package, split 4,000 / 1,000.

    The split is stratified and fixed: of each digit's 500 images (in file order), the
    first 400 are training images and the last 100 test images.
    """
    file = importlib.resources.files(__package__).joinpath("data", EMBEDDED_MNIST)
    raw = file.read_bytes()
    if hashlib.sha256(raw).hexdigest() != EMBEDDED_MNIST_SHA256:
        raise DataError(f"{file}: sha256 mismatch; the installed package is damaged")
    with np.load(file, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    test = np.zeros(len(labels), bool)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        test[idx[-EMBEDDED_TEST_PER_CLASS:]] = True
    return {
        "train_images": images[~test],
        "train_labels": labels[~test],
        "test_images": images[test],
        "test_labels": labels[test],
    }


@functools.cache
def load_mnist() -> tuple[dict[str, np.ndarray], str]:
    """Full MNIST when present in `data_dir()`, else the embedded subset (said once).

    Returns:
      ``(arrays, source)`` with the arrays of `load_mnist_full` and a one-line source.
    """
    try:
        return load_mnist_full(), f"MNIST (full, {mnist_dir()})"
    except DataError as e:
        if "not found" not in str(e):
            raise
    warnings.warn(
        f"full MNIST not found at {mnist_dir()}; using the embedded 5,000-image MNIST subset "
        "(run `l2l-opt data download mnist` for the full set)",
        stacklevel=2,
    )
    return load_mnist_embedded(), "MNIST (embedded 5k subset: 4,000 train / 1,000 test)"


@functools.cache
def text_corpus() -> tuple[np.ndarray, str]:
    """Character ids of a real English text that ships with Python: ``pydoc_data.topics``.

    The text is the Python documentation's topic pages (the standard library's
    ``pydoc_data/topics.py``), concatenated in sorted topic order; characters outside
    printable ASCII become ``?``. Ids are ``ord(c) - 32`` in ``[0, 95)``, plus newline as 95.

    Returns:
      ``(ids uint8[n], alphabet)``.
    """
    from pydoc_data import topics  # noqa: PLC0415 (only the text problems need it)

    text = "\n".join(topics.topics[k] for k in sorted(topics.topics))
    alphabet = "".join(chr(c) for c in range(32, 127)) + "\n"
    lookup = {c: i for i, c in enumerate(alphabet)}
    unknown = lookup["?"]
    ids = np.array([lookup.get(c, unknown) for c in text.replace("\t", "    ")], np.uint8)
    return ids, alphabet


def mnist_problem_data() -> tuple[dict[str, np.ndarray], str]:
    """``(data, source)`` for a `Problem`: uint8 images ``[n, 28, 28]`` and labels."""
    arrays, source = load_mnist()
    return {
        "train_x": arrays["train_images"],
        "train_y": arrays["train_labels"],
        "test_x": arrays["test_images"],
        "test_y": arrays["test_labels"],
    }, source


def sample_image_batch(key, data, batch_size: int):
    """A batch of training images scaled to [0, 1] (float32 ``[b, 28, 28]``) and labels."""

    idx = jax.random.randint(key, (batch_size,), 0, data["train_x"].shape[0])
    images, labels = jnp.asarray(data["train_x"]), jnp.asarray(data["train_y"])
    return {"x": images[idx].astype(jnp.float32) / 255.0, "y": labels[idx]}


def classification_metrics(logits_fn, data) -> dict:
    """Mean cross-entropy and accuracy of ``logits_fn(x [n, 28, 28])`` on the test split."""

    logits = logits_fn(data["test_x"].astype(np.float32) / 255.0)
    labels = data["test_y"].astype(np.int32)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return {"test_loss": loss, "test_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}


TEXT_TEST_FRACTION = 0.1  # the last 10% of the corpus is held out


def text_problem_data() -> tuple[dict[str, np.ndarray], str, int]:
    """``(data, source, vocab_size)`` for the language-model problems."""
    ids, alphabet = text_corpus()
    cut = int(len(ids) * (1 - TEXT_TEST_FRACTION))
    source = f"pydoc_data.topics (Python {_python_version()} docs text, {len(ids):,} chars)"
    return {"train": ids[:cut], "test": ids[cut:]}, source, len(alphabet)


def _python_version() -> str:

    return ".".join(map(str, sys.version_info[:2]))


def sample_text_batch(key, tokens, batch_size: int, seq_len: int):
    """Random windows of `tokens`: inputs ``x`` and next-character targets ``y``, ``[b, L]``."""

    tokens = jnp.asarray(tokens)
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - seq_len - 1)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (seq_len + 1,)))(starts)
    windows = windows.astype(jnp.int32)
    return {"x": windows[:, :-1], "y": windows[:, 1:]}


def lm_test_metrics(logits_fn, data, seq_len: int, num_windows: int = 256) -> dict:
    """Next-character cross-entropy and accuracy on fixed windows of the held-out text."""

    batch = sample_text_batch(jax.random.PRNGKey(0), data["test"], num_windows, seq_len)
    out = logits_fn(batch["x"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]))
    return {"test_loss": loss, "test_accuracy": jnp.mean(jnp.argmax(out, -1) == batch["y"])}
