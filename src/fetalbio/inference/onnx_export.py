"""Export a model file's networks to its ONNX form (:mod:`fetalbio.inference.onnx_form` describes
the form, loads and runs it; this side needs torch and the exporters).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fetalbio.inference.onnx_form import (
    EXPORT_TOLERANCE,
    FORMAT,
    FORMAT_VERSION,
    INPUT,
    META_PREFIX,
    OPSET,
    STAGE_INPUT,
    OnnxFormError,
    file_sha256,
    first_line,
    onnx_paths,
    ort_session,
    sha256_bytes,
)
from fetalbio.io import write_json
from fetalbio.model_file import LoadedStage, load_model, read_model_file
from fetalbio.tasks import RefineTask, SegmentationTask
from fetalbio.tasks.base import average_outputs


# ---------------------------------------------------------------------------------------- export
class _Members(nn.Module):
    """One stage's networks as one module: their raw outputs averaged (as the predictor does)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor):
        out = average_outputs([m(x) for m in self.members])
        return tuple(out) if isinstance(out, (list, tuple)) else out


def output_kinds(task) -> list[str]:
    """What a stage's graph outputs are, in its network's output order."""
    kind = getattr(task.model, "output_kind", "dense")
    if kind == "hybrid":
        return ["heatmaps", "coords"]
    if kind == "vector":
        return ["coords"]
    return ["logits"] if isinstance(task, SegmentationTask) else ["heatmaps"]


@contextlib.contextmanager
def _quiet():
    """Silence the exporters: Python warnings and prints, torch's loggers, and what torch's
    C++ side writes to file descriptors 1 and 2 (a failed trace dumps its whole graph there)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    saved: list[tuple[int, int]] = []
    sink = tempfile.TemporaryFile()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        for fd in (1, 2):
            try:
                sys.stdout.flush() if fd == 1 else sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
            except OSError:
                pass
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        sink.close()
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_stage(module: nn.Module, example: torch.Tensor, names: list[str], what: str):
    """``(onnx.ModelProto, exporter name)`` of one stage module, batch axis dynamic."""
    import onnx

    try:
        buf = io.BytesIO()
        with _quiet():
            torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in [INPUT, *names]}, do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue()), "torchscript"
    except Exception as first:  # noqa: BLE001 - any exporter failure: try the other exporter
        try:
            with _quiet():
                prog = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=OPSET, input_names=[INPUT], output_names=names,
                                         dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, verbose=False)
            return prog.model_proto, "dynamo"
        except Exception as second:  # noqa: BLE001
            raise OnnxFormError(f"cannot export {what} to ONNX: TorchScript exporter: {first_line(first)}; "
                                f"dynamo exporter: {first_line(second)}") from None


def _dims(vi) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _merge_stages(protos: list[tuple[str, Any]]):
    """One model over the stages' graphs, selected by ``stage``: an ``If`` per later stage ``k``
    (``stage > k - 1``: ``then`` stage ``k`` or the ``If`` of ``k + 1``, ``else`` stage ``k - 1``),
    see :mod:`~fetalbio.inference.onnx_form`."""
    import onnx
    from onnx import TensorProto, compose, helper

    outputs = [(key, vi) for key, proto in protos for vi in proto.graph.output]
    branches = []  # each stage's graph as a branch: its own outputs, the other stages' empty
    for key, proto in protos:
        g = compose.add_prefix_graph(proto.graph, f"{key}/")
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == f"{key}/{INPUT}":
                    node.input[i] = INPUT
        nodes, outs = list(g.node), []
        for out_key, vi in outputs:
            elem = vi.type.tensor_type.elem_type
            if out_key == key:
                outs.append(helper.make_tensor_value_info(f"{key}/{vi.name}", elem, None))
                outs[-1].type.tensor_type.shape.CopyFrom(vi.type.tensor_type.shape)
                continue
            dims = [0] + [d if isinstance(d, int) else 0 for d in _dims(vi)[1:]]
            name = f"{key}/empty_{vi.name}"
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(f"{name}_value", elem, dims, [])))
            outs.append(helper.make_tensor_value_info(name, elem, dims))
        branches.append(helper.make_graph(nodes, f"{key}_stage", [], outs, initializer=list(g.initializer), value_info=list(g.value_info)))
    keys = [key for key, _ in protos]
    thresholds = ["stage_zero", *(f"stage_{k}" for k in range(1, len(protos) - 1))]  # the value k - 1 each If compares with
    select = branches[-1]
    for k in range(len(protos) - 1, 0, -1):
        names = [vi.name if k == 1 else f"stages{k}+/{vi.name}" for _, vi in outputs]
        nodes = [helper.make_node("Greater", [STAGE_INPUT, thresholds[k - 1]], [f"run_{keys[k]}"], name=f"stage_is_{keys[k]}"),
                 helper.make_node("If", [f"run_{keys[k]}"], names, name="stage_select" if k == 1 else f"stage_select_{k}",
                                  then_branch=select, else_branch=branches[k - 1])]
        if k > 1:
            select = helper.make_graph(nodes, f"stages{k}+", [], [helper.make_tensor_value_info(n, vi.type.tensor_type.elem_type, None)
                                                                   for n, (_, vi) in zip(names, outputs)])
    graph_outputs = [helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, ["batch", *_dims(vi)[1:]]) for _, vi in outputs]
    graph = helper.make_graph(
        nodes, "fetalbio",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, "height", "width"]), helper.make_tensor_value_info(STAGE_INPUT, TensorProto.INT64, [])],
        graph_outputs, initializer=[helper.make_tensor(name, TensorProto.INT64, [], [k]) for k, name in enumerate(thresholds)])
    ops = [op for _, proto in protos for op in proto.opset_import]
    opsets = {d: max(op.version for op in ops if op.domain == d) for d in {op.domain for op in ops}}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              ir_version=max(p.ir_version for _, p in protos))
    for _, proto in protos:
        model.functions.extend(proto.functions)
    onnx.checker.check_model(model)
    return model


def _decoding(task) -> dict[str, Any]:
    """The effective decoding settings of a task (defaults filled in), for other programs."""
    out: dict[str, Any] = {}
    if isinstance(task, SegmentationTask):  # segmentation, refinement
        out = {"kind": "segmentation", **{k: v for k, v in task.post.items()}, "inlier_band_input_px": task.inlier_band,
               "edge_offset_px": float(task.edge_offset_px)}
        if isinstance(task, RefineTask):
            out.update(kind="refine", edge_offset_per_crop_px=float(task.edge_offset_per_crop_px), crop_span=task.span,
                       crop_passes=task.passes, crop_size=list(task.crop_size), crop_combine=task.combine, crop_tta=task.tta)
        return out
    codec = getattr(task, "codec", None)
    if codec is not None:
        out = {"kind": codec.kind, "output_stride": int(getattr(codec, "output_stride", 1))}
        heat = getattr(codec, "heatmap", codec)
        for key in ("sigma", "decoder", "uncertainty"):
            if hasattr(heat, key):
                out[key] = getattr(heat, key)
        if hasattr(codec, "point_source"):
            out["point_source"] = codec.point_source
    return out


PREPROCESSING = {
    "letterbox": "resize the 8-bit grey image by s = min(W_in / W, H_in / H) (cv2.INTER_AREA) to (round(W s), round(H s)), "
                 "pad with zeros symmetrically (left = (W_in - new_w) // 2, top = (H_in - new_h) // 2); a network pixel (x, y) is "
                 "original ((x - left + 0.5) / sx - 0.5, (y - top + 0.5) / sy - 0.5) with sx = new_w / W, sy = new_h / H",
    "normalize": "the steps train_cfg.normalize names (zscore: none), then (x - mean) / max(std, 1e-6) over the whole letterboxed "
                 "image, padding included, in float32",
}


def _stage_graph(model_path: Path, key: str, stage: LoadedStage, st: dict[str, Any], gen: torch.Generator) -> tuple:
    """Stage ``key``'s members as one graph (batch axis dynamic, the others as torch gives them):
    ``(proto, exporter, the random batch it was exported with, torch's outputs on it, its
    manifest entry: the model file's stage ``st`` without weights, and the graph's side)``."""
    tasks, tcfg = stage.tasks, stage.train_cfg
    module = _Members([copy.deepcopy(t.model).eval() for t in tasks]).eval()
    names = [f"{key}_{k}" for k in output_kinds(tasks[0])]
    example = torch.randn(2, 1, tcfg.input_height, tcfg.input_width, generator=gen)
    with torch.inference_mode():
        ref = module(example)
    refs = list(ref) if isinstance(ref, tuple) else [ref]
    if len(refs) != len(names):
        raise OnnxFormError(f"{model_path}: the {key} network gives {len(refs)} outputs, expected {len(names)} ({', '.join(names)})")
    proto, exporter = _export_stage(module, example, names, f"{model_path}'s {key} stage ({tasks[0].model.__class__.__name__})")
    for vi, r in zip(proto.graph.output, refs):  # concrete dims where the exporter left names
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != r.ndim:
            raise OnnxFormError(f"{model_path}: the {key} stage's ONNX output {vi.name} has {len(dims)} dims, torch's {r.ndim}")
        dims[0].Clear()
        dims[0].dim_param = "batch"
        for d, n in zip(list(dims)[1:], r.shape[1:]):
            d.Clear()
            d.dim_value = int(n)
    meta = {
        **{k: v for k, v in st.items() if k != "state_dicts"},
        "members": len(tasks),
        "input_size": [tcfg.input_width, tcfg.input_height],
        "normalize": tcfg.normalize,
        "outputs": [{"name": vi.name, "shape": ["batch", *_dims(vi)[1:]]} for vi in proto.graph.output],
        "output_kind": getattr(tasks[0].model, "output_kind", "dense"),
        "output_stride": int(getattr(tasks[0].model, "output_stride", 1)),
        "decoding": _decoding(tasks[0]),
    }
    return proto, exporter, example.numpy(), [r.numpy() for r in refs], meta


def _check_against_torch(model_path: Path, data: bytes, keys: list[str], graphs: list[tuple]) -> dict[str, float]:
    """The written bytes, run in ONNX Runtime, against torch on each stage's random batch: the
    largest difference per stage (refused over :data:`EXPORT_TOLERANCE`)."""
    sess = ort_session(data, threads=1)
    diffs = {}
    for i, (key, (_, _, example, refs, meta)) in enumerate(zip(keys, graphs)):
        feed = {INPUT: example, **({STAGE_INPUT: np.array(i, dtype=np.int64)} if len(graphs) > 1 else {})}
        got = sess.run([o["name"] for o in meta["outputs"]], feed)
        if [a.shape for a in got] != [r.shape for r in refs]:
            raise OnnxFormError(f"{model_path}: the {key} stage's ONNX outputs have shapes {[a.shape for a in got]}, torch's {[r.shape for r in refs]}")
        diff = max(float(np.max(np.abs(a - r))) if r.size else 0.0 for a, r in zip(got, refs))
        scale = max(1.0, *(float(np.max(np.abs(r))) for r in refs if r.size))
        if not diff <= EXPORT_TOLERANCE * scale:
            raise OnnxFormError(f"{model_path}: the {key} stage's ONNX graph differs from torch by {diff:.3g} (tolerance {EXPORT_TOLERANCE * scale:.3g}); not written")
        diffs[key] = diff
    return diffs


def export_onnx(model_path: Path, out: Path | None = None) -> tuple[Path, Path, dict[str, Any]]:  # long: export, check against torch and write the manifest, in order
    """Write the ONNX form of a model file (version 1 or 2): ``X.onnx`` and ``X.onnx.json``
    next to it, or at ``out`` (the graph's path). Returns ``(graph, manifest, manifest dict)``."""
    import onnx
    import onnxruntime as ort

    from fetalbio import __version__

    model_path = Path(model_path)
    if out is not None and not Path(out).name.endswith(".onnx"):
        raise OnnxFormError(f"--out {out}: the graph's file name must end in .onnx (the manifest is <name>.onnx.json)")
    raw = read_model_file(model_path)
    loaded = load_model(model_path)
    graph_path, manifest_path = onnx_paths(out if out is not None else model_path)
    roles = [st.role for st in loaded.stages]
    keys = [r if roles.count(r) == 1 else f"{r}{i}" for i, r in enumerate(roles)]  # names in the graph: the role, with the index if shared
    gen = torch.Generator().manual_seed(0)
    graphs = [_stage_graph(model_path, key, stage, st, gen) for key, stage, st in zip(keys, loaded.stages, raw["stages"])]
    stage_meta = [g[4] for g in graphs]
    if len(graphs) == 1:
        model = graphs[0][0]
        inputs = {INPUT: {"dtype": "float32", "shape": ["batch", 1, stage_meta[0]["input_size"][1], stage_meta[0]["input_size"][0]]}}
    else:
        model = _merge_stages([(key, g[0]) for key, g in zip(keys, graphs)])
        inputs = {INPUT: {"dtype": "float32", "shape": ["batch", 1, "height", "width"]}, STAGE_INPUT: {"dtype": "int64", "shape": []}}
        for i, st in enumerate(stage_meta):
            st["stage_value"] = i
    model.producer_name, model.producer_version = "fetalbio", __version__
    model.doc_string = f"fetalbio {raw.get('method')}: preprocessing, decoding and thresholds are in the manifest <this file>.json"
    onnx.helper.set_model_props(model, {
        f"{META_PREFIX}format": FORMAT,
        f"{META_PREFIX}format_version": str(FORMAT_VERSION),
        f"{META_PREFIX}method": str(raw.get("method")),
        f"{META_PREFIX}stages": ",".join(roles),
    })
    data = model.SerializeToString()
    diffs = _check_against_torch(model_path, data, keys, graphs)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "graph_sha256": sha256_bytes(data),
        "inputs": inputs,
        "method": raw.get("method"),
        "stages": stage_meta,
        "uncertainty_threshold_px": raw.get("uncertainty_threshold_px"),
        "uncertain_quantile": raw.get("uncertain_quantile"),
        # the triage combiner (fetalbio.triage: signals, ridge weights, conformal factor,
        # thresholds, plausibility ranges), when the model file has one
        "triage": raw.get("triage"),
        "provenance": raw.get("provenance", {}),
        "source_model": {"format_version": raw.get("format_version"), "sha256": file_sha256(model_path)},
        "preprocessing": PREPROCESSING,
        "export": {"opset": OPSET, "exporter": {key: g[1] for key, g in zip(keys, graphs)}, "max_abs_diff_vs_torch": diffs, "fetalbio": __version__,
                   "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = graph_path.with_name(f".{graph_path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, graph_path)
    write_json(manifest_path, manifest)
    return graph_path, manifest_path, manifest
