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
if ! python -m pip install --quiet --disable-pip-version-check -e ".[test]" > .venv/install.log 2>&1; then
  grep -v "is ignored: it is neither" .venv/install.log >&2
  echo "install failed (full log: .venv/install.log)" >&2
  exit 1
fi
python -c "import fetalbio, torch, dvc" || { echo "install incomplete (see .venv/install.log)" >&2; exit 1; }
export DVC_NO_ANALYTICS=1
