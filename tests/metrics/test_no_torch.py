"""Light imports, checked in a fresh interpreter: `import fetalbio.metrics` loads no torch and no
OpenCV, and the ONNX Runtime side of prediction loads no torch."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _run_fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_import_metrics_does_not_import_torch_or_cv2():
    res = _run_fresh(
        "import sys, fetalbio.metrics\n"
        "heavy = sorted(m for m in ('torch', 'cv2') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert res.returncode == 0, res.stderr


def test_the_onnx_runtime_side_of_prediction_does_not_import_torch():
    """Tasks, the model file, the ONNX form, the predictor and the runtime choice: importing them
    loads no torch (ONNX Runtime prediction runs without it; torch is imported where a network
    runs in it or trains)."""
    res = _run_fresh(
        "import sys\n"
        "import fetalbio.tasks, fetalbio.model_file, fetalbio.inference.onnx_form, fetalbio.inference.predictor, fetalbio.inference.runtime\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    assert res.returncode == 0, res.stderr
