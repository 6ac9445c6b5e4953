"""`import fetalbio.metrics` must stay light: no torch, no OpenCV (checked in a fresh interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_import_metrics_does_not_import_torch_or_cv2():
    code = (
        "import sys, fetalbio.metrics\n"
        "heavy = sorted(m for m in ('torch', 'cv2') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
