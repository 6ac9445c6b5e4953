#!/usr/bin/env bash
# README command 1: install (if needed), run the whole pipeline on the configured data, and end
# on a short summary (what ran, where the outputs are, the top methods; `dvc metrics show` has all).
source "$(dirname "$0")/_env.sh"
start=$(date +%s)
dvc repro "$@"
end=$(date +%s)
echo
fetalbio summary --seconds "$((end - start))" --since "$start"
