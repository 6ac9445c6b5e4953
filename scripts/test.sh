#!/usr/bin/env bash
# README command 2 (and CI): install (if needed) and run the test suite.
source "$(dirname "$0")/_env.sh"
ruff check src tests stages scripts   # lint (pyproject.toml [tool.ruff]): pyflakes, import order, bugbear, pycodestyle errors
python -m pytest "$@"
