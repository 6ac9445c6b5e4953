"""dvc.yaml's hand-kept code deps cannot drift: each stage's script is parsed, the fetalbio modules
it can import (transitively, function-level imports included, with their packages' __init__) are
listed, and every one must lie under a dep of that stage, so a change to any of them reruns it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from import_graph import REPO, SRC, fetalbio_imports, module_file


def module_closure(script: Path) -> set[Path]:
    """Every source file of fetalbio that ``script`` can import, with its packages' __init__.py."""
    seen: set[str] = set()
    todo = list(fetalbio_imports(script))
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            sub = ".".join(parts[:i])
            f = module_file(sub)
            if f is None or sub in seen:
                continue
            seen.add(sub)
            todo.extend(fetalbio_imports(f))
    return {f for f in (module_file(n) for n in seen) if f is not None}


def _stage_bodies() -> dict[str, dict]:
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: (st.get("do") or st) for name, st in raw.items()}


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_runs_a_script_under_stages() -> None:
    for name, body in _stage_bodies().items():
        assert re.match(r"python stages/\w+\.py ", " ".join(body["cmd"].split())), (name, body["cmd"])


def test_each_stage_depends_on_every_module_its_script_can_import() -> None:
    missing = {}
    for name, body in _stage_bodies().items():
        script = REPO / re.search(r"stages/\w+\.py", body["cmd"]).group(0)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        assert _covered(script, deps), f"stage {name}: its script {script.name} is not a dep"
        lost = sorted(f.relative_to(REPO).as_posix() for f in module_closure(script) if not _covered(f, deps))
        if lost:
            missing[name] = lost
    assert not missing, "dvc.yaml deps miss modules the stage imports:\n" + "\n".join(f"  {k}: {v}" for k, v in missing.items())


def test_the_closure_follows_function_level_and_transitive_imports(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("def main():\n    from fetalbio.reporting.evaluate import evaluate\n")
    closure = {f.relative_to(REPO).as_posix() for f in module_closure(script)}
    assert "src/fetalbio/reporting/evaluate.py" in closure
    assert "src/fetalbio/__init__.py" in closure and "src/fetalbio/reporting/__init__.py" in closure
    assert "src/fetalbio/metrics/__init__.py" in closure  # evaluate imports fetalbio.metrics


def test_the_library_never_imports_stages() -> None:
    for f in (SRC / "fetalbio").rglob("*.py"):
        assert "stages" not in {n.split(".")[0] for n in fetalbio_imports(f)} and "from stages" not in f.read_text(encoding="utf-8"), f


def test_dvc_lock_holds_only_the_pipeline_s_stages() -> None:
    """DVC keeps the lock entries of stages that no longer exist; every stage run re-parses and
    rewrites the whole lock (seconds per stage for a few hundred KB), so stale entries cost the
    first run time. Prune them with the stage list of `dvc.repo.Repo('.').index.stages`."""
    from dvc.repo import Repo

    live = {s.addressing for s in Repo(str(REPO)).index.stages}
    locked = set(yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"])
    assert locked <= live, f"dvc.lock entries of stages not in dvc.yaml: {sorted(locked - live)[:10]}"
