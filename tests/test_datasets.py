"""The data layer, tested without internet: IDX files this test builds, served on 127.0.0.1."""

import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from l2l_opt import cli
from l2l_opt.problems import datasets


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_files():
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (20,)),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (6,)),
    }
    blobs = {name: _idx(a) for name, a in arrays.items()}
    digests = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    return arrays, blobs, digests


class _Server:
    """Serves `blobs` with HTTP Range support; can cut a response short or corrupt a file."""

    def __init__(self, blobs):
        self.blobs = dict(blobs)
        self.cut_after: int | None = None  # send only this many bytes, then drop
        self.ranges: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.blobs.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    server.ranges.append(rng)
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.cut_after is not None:
                    chunk = chunk[: server.cut_after]
                self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(idx_files):
    s = _Server(idx_files[1])
    yield s
    s.close()


def test_download_verifies_and_loads(tmp_path, server, idx_files):
    arrays, _, digests = idx_files
    target = datasets.download_mnist(tmp_path, base_url=server.url, files=digests)
    assert sorted(p.name for p in target.iterdir()) == sorted(digests)
    loaded = datasets.load_mnist_full(tmp_path, files=digests)
    np.testing.assert_array_equal(loaded["train_images"], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(loaded["test_labels"], arrays["t10k-labels-idx1-ubyte.gz"])
    # A second call finds verified files and fetches nothing.
    server.blobs.clear()
    datasets.download_mnist(tmp_path, base_url=server.url, files=digests)


def test_corrupted_download_is_refused_and_deleted(tmp_path, server, idx_files):
    _, blobs, digests = idx_files
    name = "train-labels-idx1-ubyte.gz"
    server.blobs[name] = blobs[name][:-3] + b"xyz"
    with pytest.raises(datasets.DataError, match="sha256 .* does not match"):
        datasets.download_mnist(tmp_path, base_url=server.url, files=digests)
    assert not (tmp_path / "mnist" / name).exists()
    assert not (tmp_path / "mnist" / (name + ".part")).exists()


def test_interrupted_download_resumes_with_range(tmp_path, server, idx_files):
    _, blobs, digests = idx_files
    name = "train-images-idx3-ubyte.gz"
    one = {name: digests[name]}
    server.cut_after = len(blobs[name]) // 3
    with pytest.raises(datasets.DataError, match="run the download again to resume"):
        datasets.download_mnist(tmp_path, base_url=server.url, files=one)
    part = tmp_path / "mnist" / (name + ".part")
    assert part.stat().st_size == len(blobs[name]) // 3
    assert not (tmp_path / "mnist" / name).exists()
    server.cut_after = None
    datasets.download_mnist(tmp_path, base_url=server.url, files=one)
    assert server.ranges == [f"bytes={len(blobs[name]) // 3}-"]
    assert (tmp_path / "mnist" / name).read_bytes() == blobs[name]
    assert not part.exists()


def test_missing_data_names_the_place_and_the_fix(tmp_path, idx_files):
    with pytest.raises(datasets.DataError) as e:
        datasets.load_mnist_full(tmp_path, files=idx_files[2])
    msg = str(e.value)
    assert f"MNIST not found at {tmp_path / 'mnist'}" in msg
    assert "run `l2l-opt data download mnist` or set L2L_DATA_DIR" in msg


def test_corrupt_file_on_disk_is_refused(tmp_path, server, idx_files):
    digests = idx_files[2]
    datasets.download_mnist(tmp_path, base_url=server.url, files=digests)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"broken")
    with pytest.raises(datasets.DataError, match="does not match"):
        datasets.load_mnist_full(tmp_path, files=digests)


def test_unreachable_server_gives_a_clear_error(tmp_path, idx_files):
    with pytest.raises(datasets.DataError, match="downloading http://127.0.0.1:9/"):
        datasets.download_mnist(
            tmp_path, base_url="http://127.0.0.1:9/", files=idx_files[2], timeout=5
        )


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("L2L_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path
    monkeypatch.delenv("L2L_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert datasets.data_dir() == tmp_path / "c" / "l2l_opt"


def test_cli_download_uses_l2l_data_dir(tmp_path, server, idx_files, monkeypatch, capsys):
    monkeypatch.setenv("L2L_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "MNIST_FILES", idx_files[2])
    assert cli.main(["data", "download", "mnist", "--url", server.url]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_embedded_subset_is_real_mnist_with_a_fixed_stratified_split():
    data = datasets.load_mnist_embedded()
    assert data["train_images"].shape == (4000, 28, 28) and data["test_images"].shape == (
        1000,
        28,
        28,
    )
    assert data["train_images"].dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(data["train_labels"]), [400] * 10)
    np.testing.assert_array_equal(np.bincount(data["test_labels"]), [100] * 10)
    # Digits look like digits: dark background, bright strokes in the centre.
    mean = data["train_images"].mean(0)
    assert mean[:3].mean() < 5 and mean[10:18, 10:18].mean() > 60


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd"))
    with pytest.raises(datasets.DataError, match="not an IDX file"):
        datasets.read_idx(bad)


def test_text_corpus_is_real_english():
    ids, alphabet = datasets.text_corpus()
    text = "".join(alphabet[i] for i in ids[:20000])
    assert len(ids) > 300_000 and " the " in text and "function" in text


def test_full_mnist_is_used_when_present(tmp_path, server, idx_files, monkeypatch):
    arrays, _, digests = idx_files
    monkeypatch.setenv("L2L_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "MNIST_FILES", digests)
    datasets.download_mnist(base_url=server.url)
    datasets.load_mnist.cache_clear()
    try:
        data, source = datasets.load_mnist()
        assert source.startswith("MNIST (full") and data["train_images"].shape == (20, 28, 28)
    finally:
        datasets.load_mnist.cache_clear()


def test_embedded_subset_is_announced_once(tmp_path, monkeypatch):
    monkeypatch.setenv("L2L_DATA_DIR", str(tmp_path))
    datasets.load_mnist.cache_clear()
    try:
        with pytest.warns(UserWarning, match="embedded 5,000-image MNIST subset"):
            _, source = datasets.load_mnist()
        assert "embedded" in source
        import warnings  # noqa: PLC0415

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            datasets.load_mnist()  # cached: no second warning
    finally:
        datasets.load_mnist.cache_clear()
