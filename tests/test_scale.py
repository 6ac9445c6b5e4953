"""Running at scale: queued experiments in parallel, and a shared DVC remote (docs/scale.md).

One baseline `dvc repro` (module fixture) of the smallest configuration serves both tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dvc_project import commit, dvc_env, make_project, micro_params, run

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 600
SIGMAS = {"sigma-small": 1.0, "sigma-large": 3.5}   # variants.hm_unet.codec.sigma (baseline 2.0)


def nano_params(params: dict) -> dict:
    """Smaller than micro: one landmark and one segmentation variant, 2 folds, 1 epoch, one CPU
    thread per training process (two run side by side), and `final` exports the fold models
    instead of training once more."""
    params = micro_params(params)
    params["variant_names"] = ["hm_unet", "seg_unet"]
    params["train"] = {**params["train"], "epochs": 1, "warmup_epochs": 0, "cpu_threads": 1}
    params["final"] = {**params["final"], "source": "folds"}
    v = params["variants"]   # a fixed mask-edge offset: no calibration fits in each seg_unet fold
    v["seg_unet"] = {**v["seg_unet"], "postprocess": {**v["seg_unet"]["postprocess"], "edge_offset_px": 0}}
    return params


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of the project, reproduced and committed (experiments start from a commit)."""
    project = make_project(tmp_path_factory.mktemp("scale"), nano_params)
    # `dvc exp` commits the experiments: it needs an identity of its own
    run(["git", "config", "user.name", "ci"], project)
    run(["git", "config", "user.email", "ci@localhost"], project)
    run(["dvc", "repro"], project)
    commit(project, "baseline")
    return project


def _procs_in(project: Path) -> list[str]:
    """Processes (other than this one) working in ``project`` or naming it on their command line,
    and all their descendants (queued experiments run in temporary directories outside it)."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        procs[int(pid)] = (ppid, cwd, cmd)
    inside = {pid for pid, (_, cwd, cmd) in procs.items()
              if pid != os.getpid() and (cwd == str(project) or cwd.startswith(f"{project}/") or str(project) in cmd)}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in inside and pid not in inside}
        inside |= more
        grew = bool(more)
    return [f"{pid}: {procs[pid][2]}" for pid in sorted(inside)]


def _stop_queue(project: Path) -> None:
    """Stop the queue workers (killing running tasks) and wait until no process runs in the
    project; the stop is asked again every 30 s (once, a worker outlived a single request by
    more than 60 s on a 2-core machine)."""
    deadline = time.monotonic() + 120
    while True:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=project, env=dvc_env(), capture_output=True, text=True, timeout=120)
        ask_again = time.monotonic() + 30
        while _procs_in(project) and time.monotonic() < min(ask_again, deadline):
            time.sleep(1)
        if not _procs_in(project) or time.monotonic() >= deadline:
            return


def _metrics(exp: dict, variant: str) -> dict:
    return exp["data"]["metrics"][f"metrics/variants/{variant}.json"]["data"]


def test_queued_experiments_run_in_parallel(baseline: Path) -> None:
    # targeted at the changed variant's evaluation, so that the experiments skip `compare` and
    # `final` (cost only: two stages fewer per experiment; untargeted they run too, as in docs/scale.md)
    for name, sigma in SIGMAS.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"variants.hm_unet.codec.sigma={sigma}", "evaluate@hm_unet"], baseline)
    most_running = 0
    try:
        # returns at once; the detached workers inherit its stdout/stderr, so these must not be pipes
        # (capture_output would wait for the workers to exit, i.e. for the whole queue)
        with open(baseline / ".dvc/tmp/queue-start.log", "w") as log:
            started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=baseline, env=dvc_env(),
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=120)
        assert started.returncode == 0, (baseline / ".dvc/tmp/queue-start.log").read_text()
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            # `dvc queue status` costs a CPU-second: while experiments run, watch their processes
            # (`dvc exp exec-run`, one per running experiment) instead
            while (n := sum("exp exec-run" in p for p in _procs_in(baseline))) and time.monotonic() < deadline:
                most_running = max(most_running, n)
                time.sleep(1)
            status = run(["dvc", "queue", "status"], baseline).stdout
            if not any(s in status for s in ("Queued", "Running")):
                break
            assert time.monotonic() < deadline, f"queue not done after {QUEUE_TIMEOUT_S} s:\n{status}"
            time.sleep(2)
        logs = {name: subprocess.run(["dvc", "queue", "logs", name], cwd=baseline, env=dvc_env(), capture_output=True, text=True, timeout=120).stdout
                for name in SIGMAS}
        assert status.count("Success") == 2, f"{status}\n" + "\n".join(f"--- {n}\n{log}" for n, log in logs.items())
    finally:
        _stop_queue(baseline)
    assert not _procs_in(baseline), "queue workers left running"
    # each experiment takes well over a poll interval: with -j 2 both were seen running at once
    assert most_running == 2, most_running

    # only the changed variant (and what reads it) ran; seg_unet was not retrained
    for name, log in logs.items():
        for stage in ("train@hm_unet", "evaluate@hm_unet"):
            assert f"Running stage '{stage}'" in log, (name, stage, log)
        for stage in ("ingest", "build_folds", "train@seg_unet", "evaluate@seg_unet", "compare"):
            assert f"Running stage '{stage}'" not in log, (name, stage, log)

    rows = json.loads(run(["dvc", "exp", "show", "--json"], baseline).stdout)
    base = next(r for r in rows if r["rev"] == "workspace")
    baseline_row = next(r for r in rows if r["rev"] != "workspace")
    exps = {e["revs"][0]["name"]: e["revs"][0] for e in baseline_row.get("experiments") or []}
    assert set(SIGMAS) <= set(exps), sorted(exps)
    for name, sigma in SIGMAS.items():
        assert exps[name]["data"]["params"]["params.yaml"]["data"]["variants"]["hm_unet"]["codec"]["sigma"] == sigma
    small, large = exps["sigma-small"], exps["sigma-large"]
    # the changed variant's numbers moved; the untouched variant's are the baseline's
    assert _metrics(small, "hm_unet") != _metrics(large, "hm_unet")
    assert _metrics(small, "hm_unet") != _metrics(base, "hm_unet")
    assert _metrics(small, "seg_unet") == _metrics(large, "seg_unet") == _metrics(base, "seg_unet")
    # the workspace is still the baseline
    assert yaml.safe_load((baseline / "params.yaml").read_text())["variants"]["hm_unet"]["codec"]["sigma"] == 2.0


def _dvc_outs(project: Path) -> list[str]:
    """The cached outputs of the reproduced pipeline (dvc.lock); everything under metrics/, plots/
    and reports/ is `cache: false` and lives in git."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = {o["path"] for s in lock["stages"].values() for o in s.get("outs") or []}
    return sorted(p for p in outs if not p.startswith(("metrics/", "plots/", "reports/")))


def _digests(root: Path, rels: list[str]) -> dict[str, str]:
    out = {}
    for rel in rels:
        p = root / rel
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _in_remote(remote: Path, path: Path) -> bool:
    h = hashlib.md5(path.read_bytes()).hexdigest()
    return (remote / "files" / "md5" / h[:2] / h[2:]).is_file()


def test_push_then_pull_restores_outputs(baseline: Path, tmp_path: Path) -> None:
    outs = _dvc_outs(baseline)
    assert {"data/folds.csv", "release/model.pt", "models/hm_unet", "models/seg_unet", "models/refine"} <= set(outs), outs
    before = _digests(baseline, outs)
    assert len(before) > 20
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], baseline)
    try:
        run(["dvc", "push"], baseline)
        # cached outputs are in the remote; metrics/plots/reports (`cache: false`) live in git only
        assert _in_remote(remote, baseline / "data/folds.csv") and _in_remote(remote, baseline / "release/model.pt")
        assert not _in_remote(remote, baseline / "metrics/compare.json")
        assert "in sync" in run(["dvc", "status", "--cloud"], baseline).stdout
        # a fresh machine: no cache, no outputs
        shutil.rmtree(baseline / ".dvc/cache")
        (baseline / "data/folds.csv").unlink()
        shutil.rmtree(baseline / "models")
        (baseline / "release/model.pt").unlink()
        assert "deleted" in run(["dvc", "status"], baseline).stdout
        run(["dvc", "pull"], baseline)
        assert _digests(baseline, outs) == before
        status = run(["dvc", "status"], baseline).stdout
        assert "Data and pipelines are up to date." in status, status
    finally:
        run(["dvc", "remote", "remove", "local"], baseline)
