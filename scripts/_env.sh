# Sourced by scripts/repro.sh and scripts/test.sh: create .venv if needed and install fetalbio.
# torch is pinned to 2.13.0 in pyproject.toml: on these machines that pin resolves to a local CPU
# build; an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
python -c "import fetalbio, torch, dvc" || { echo "install failed" >&2; exit 1; }
export DVC_NO_ANALYTICS=1
