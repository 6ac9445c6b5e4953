#!/usr/bin/env bash
# README command 1: install (if needed) and run the whole pipeline on the configured data.
source "$(dirname "$0")/_env.sh"
dvc repro "$@"
dvc metrics show
