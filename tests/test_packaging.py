"""The wheel a user installs: the library, the suite under the project's namespace, the
shipped weights and data, the licence and the data's notice."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).parent.parent


def test_wheel_holds_the_package_data_and_licences_and_no_top_level_problems(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("l2l_opt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for want in (
        "l2l_opt/pretrained/mixture.npz",
        "l2l_opt/pretrained/mnist.npz",
        "l2l_opt/pretrained/quadratic.npz",
        "l2l_opt/pretrained/README.md",
        "l2l_opt/problems/__init__.py",
        "l2l_opt/problems/data/mnist_5k.npz",
        "l2l_opt/problems/data/README.md",
    ):
        assert want in names, want
    licences = [n for n in names if ".dist-info/licenses/" in n]
    assert any(n.endswith("/LICENSE") for n in licences)
    assert any(n.endswith("/NOTICE") for n in licences)
    assert not any(n.startswith("problems/") for n in names)
    notice = (ROOT / "NOTICE").read_text()
    assert "CC BY-SA 3.0" in notice and "mnist_5k.npz" in notice
