"""README's quick start runs as written."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_quick_start_runs_as_written(tmp_path):
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "quick_start.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    final = float(re.search(r"loss (\S+)", proc.stdout).group(1))
    assert final < 0.01 * 11.0  # started at 10 * 1^2 + 1^2 = 11
