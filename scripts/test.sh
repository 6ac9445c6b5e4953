#!/usr/bin/env bash
# README command 2 (and CI): install (if needed) and run the test suite.
source "$(dirname "$0")/_env.sh"
python -m pytest "$@"
