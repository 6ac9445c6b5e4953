"""The ONNX form of a model file: its networks as one ONNX graph, everything else in a JSON
manifest beside it, so that ONNX Runtime -- here (``fetalbio predict --runtime onnx``) or in a
program in another language -- reproduces the measurement from these two files alone.

Layout (``X.pt`` is the model file; the pair can be renamed together, neither names the other):

``X.onnx``, the graph (ONNX opset :data:`OPSET`)
    Input ``image``: float32 ``(batch, 1, H, W)``, letterboxed and z-scored images (dynamic
    batch axis; ``H, W`` the stage's input size). Outputs ``<role>_<kind>``: ``logits``
    (segmentation and refinement: the skull logit; sigmoid gives the probability),
    ``heatmaps`` (one map per point), ``coords`` (``(batch, 4, 2)`` normalised x, y); a
    hybrid network gives ``heatmaps`` and ``coords``. An ensemble (several state dicts in a
    stage) is one graph that averages its members' raw outputs, as torch prediction does
    (measured with two DeepLabV3+ members at batch 1 on 2 threads: 17.7 ms as one graph, 18.1 ms
    as one session per member averaged in numpy; and the consumer has nothing to average).

    A coarse-to-fine model (two stages) is one file holding both graphs: an ``If`` on a second
    input ``stage`` (int64 scalar) runs the first stage (``stage`` = 0, the ``else`` branch) or
    the refinement stage (1, ``then``); ``image`` is then ``(batch, 1, height, width)``, each
    stage at its own input size, and the outputs of the stage not run come back empty (batch 0).
    One file, not one per stage, because the set of files must not depend on the method: DVC
    declares the ``final`` stage's outputs in advance (``release/model.onnx`` and
    ``release/model.onnx.json``), and ``final`` may export either kind of model.

    Graph metadata (``metadata_props``): ``fetalbio_format`` = :data:`FORMAT`,
    ``fetalbio_format_version``, ``fetalbio_method``, ``fetalbio_stages`` (roles, comma-separated).
``X.onnx.json``, the manifest
    ``format`` (:data:`FORMAT`), ``format_version``, ``graph_sha256`` (of the ``.onnx`` file's
    bytes), ``inputs`` (name -> dtype, shape), ``method``, ``stages`` (per stage: the model
    file's stage without weights -- ``role``, ``variant``, ``family``, ``spec``,
    ``variant_cfg``, ``train_cfg``, ``calibration`` -- and ``members``, ``input_size``
    ``[W, H]``, ``normalize``, ``outputs`` (name, shape), ``output_kind``, ``output_stride``,
    ``stage_value`` (two-stage models) and ``decoding``: the effective decoding settings,
    defaults filled in), ``uncertainty_threshold_px``, ``uncertain_quantile``,
    ``provenance``, ``source_model`` (format version and sha256 of the model file it came
    from), ``preprocessing`` (the letterbox and normalisation, in words) and ``export``
    (exporter per stage, opset, versions, the largest ORT - torch difference measured at
    export). docs/onnx.md shows a consumer.

Export (:func:`export_onnx`) uses torch's TorchScript-based exporter (its graph ran the shipped
DeepLabV3+ in 6.0 ms against 11.9 ms for the dynamo exporter's, batch 1, 2 threads) and falls
back to the dynamo exporter for networks the former cannot trace (``hybrid_hourglass``'s
adaptive pooling). It then runs the written file in ONNX Runtime against torch on a random
batch of two and refuses a difference over :data:`EXPORT_TOLERANCE` (relative to the output's
scale).

Loading (:func:`load_onnx_form`) refuses, naming the file and what is wrong (an
:class:`OnnxFormError`): a graph without its manifest (or the reverse), a manifest that is not
JSON or not this format, a graph ONNX Runtime cannot load (corrupt, truncated, empty), a graph
without the fetalbio metadata (a foreign ONNX file), a graph whose bytes do not match
``graph_sha256``, a manifest whose method, stages, inputs or outputs do not match the graph,
and, when a model file is named too, a form exported from another model file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fetalbio.model_file import LoadedModel, load_model, model_from_raw, read_model_file
from fetalbio.io import write_json
from fetalbio.tasks.base import average_outputs

FORMAT = "fetalbio-onnx"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
OPSET = 18
INPUT = "image"
STAGE_INPUT = "stage"
# export refuses a graph whose outputs differ from torch's by more than this x max(1, |output|)
EXPORT_TOLERANCE = 1e-4
META_PREFIX = "fetalbio_"
MANIFEST_KEYS = ("format", "format_version", "graph_sha256", "inputs", "method", "stages")
STAGE_KEYS = ("role", "variant", "variant_cfg", "train_cfg", "calibration", "input_size", "normalize", "outputs")


class OnnxFormError(ValueError):
    """An ONNX form that cannot be used (the message names the file and the problem)."""


# ----------------------------------------------------------------------------------- file names
def is_onnx_path(path: Path) -> bool:
    """``X.onnx`` or ``X.onnx.json``: an ONNX form named directly (no model file)."""
    name = Path(path).name
    return name.endswith(".onnx") or name.endswith(".onnx.json")


def onnx_paths(path: Path) -> tuple[Path, Path]:
    """``(graph, manifest)`` of a model file ``X.pt`` (``X.onnx``, ``X.onnx.json``), or of
    ``X.onnx`` / ``X.onnx.json`` themselves."""
    p = Path(path)
    if p.name.endswith(".onnx.json"):
        graph = p.with_name(p.name[: -len(".json")])
    elif p.name.endswith(".onnx"):
        graph = p
    else:
        graph = p.with_suffix(".onnx")
    return graph, graph.with_name(graph.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- export
class _Members(nn.Module):
    """One stage's networks as one module: their raw outputs averaged (as the predictor does)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor):
        out = average_outputs([m(x) for m in self.members])
        return tuple(out) if isinstance(out, (list, tuple)) else out


def output_kinds(family: str, net: nn.Module) -> list[str]:
    """What a stage's graph outputs are, in the network's output order."""
    kind = getattr(net, "output_kind", "dense")
    if kind == "hybrid":
        return ["heatmaps", "coords"]
    if kind == "vector":
        return ["coords"]
    return ["logits"] if family in ("segmentation", "refine") else ["heatmaps"]


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


def _first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {text[:200]}"


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
            raise OnnxFormError(f"cannot export {what} to ONNX: TorchScript exporter: {_first_line(first)}; "
                                f"dynamo exporter: {_first_line(second)}") from None


def _dims(vi) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _merge_stages(protos: list[tuple[str, Any]]):
    """One model with an ``If`` on ``stage`` over the stages' graphs (see the module docstring)."""
    import onnx
    from onnx import TensorProto, compose, helper

    outputs = [(role, vi) for role, proto in protos for vi in proto.graph.output]
    branches = {}
    for role, proto in protos:
        g = compose.add_prefix_graph(proto.graph, f"{role}/")
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == f"{role}/{INPUT}":
                    node.input[i] = INPUT
        nodes, outs = list(g.node), []
        for out_role, vi in outputs:
            elem = vi.type.tensor_type.elem_type
            if out_role == role:
                outs.append(helper.make_tensor_value_info(f"{role}/{vi.name}", elem, None))
                outs[-1].type.tensor_type.shape.CopyFrom(vi.type.tensor_type.shape)
                continue
            dims = [0] + [d if isinstance(d, int) else 0 for d in _dims(vi)[1:]]
            name = f"{role}/empty_{vi.name}"
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(f"{name}_value", elem, dims, [])))
            outs.append(helper.make_tensor_value_info(name, elem, dims))
        branches[role] = helper.make_graph(nodes, f"{role}_stage", [], outs, initializer=list(g.initializer), value_info=list(g.value_info))
    roles = [r for r, _ in protos]
    cond = helper.make_node("Greater", [STAGE_INPUT, "stage_zero"], ["run_refine"], name="stage_is_refine")
    choose = helper.make_node("If", ["run_refine"], [vi.name for _, vi in outputs], name="stage_select",
                              then_branch=branches[roles[1]], else_branch=branches[roles[0]])
    graph_outputs = []
    for _, vi in outputs:
        graph_outputs.append(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, ["batch", *_dims(vi)[1:]]))
    graph = helper.make_graph(
        [cond, choose], "fetalbio",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, "height", "width"]), helper.make_tensor_value_info(STAGE_INPUT, TensorProto.INT64, [])],
        graph_outputs, initializer=[helper.make_tensor("stage_zero", TensorProto.INT64, [], [0])])
    opsets: dict[str, int] = {}
    for _, proto in protos:
        for op in proto.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              ir_version=max(p.ir_version for _, p in protos))
    for _, proto in protos:
        model.functions.extend(proto.functions)
    onnx.checker.check_model(model)
    return model


def _decoding(task) -> dict[str, Any]:
    """The effective decoding settings of a task (defaults filled in), for other programs."""
    out: dict[str, Any] = {}
    if hasattr(task, "post"):  # segmentation, refinement
        out = {"kind": "segmentation", **{k: v for k, v in task.post.items()}, "inlier_band_input_px": task.inlier_band,
               "edge_offset_px": float(task.edge_offset_px)}
        if task.family == "refine":
            out.update(kind="refine", edge_offset_per_crop_px=float(task.edge_offset_per_crop_px), crop_span=task.span,
                       crop_passes=task.passes, crop_size=list(task.crop_size))
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


def export_onnx(model_path: Path, out: Path | None = None) -> tuple[Path, Path, dict[str, Any]]:
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
    stages = [("coarse", loaded.tasks, loaded.train_cfg)] + ([("refine", loaded.refine.tasks, loaded.refine.train_cfg)] if loaded.refine else [])
    protos, modules, stage_meta, exporters, examples = [], {}, [], {}, {}
    gen = torch.Generator().manual_seed(0)
    for i, (role, tasks, tcfg) in enumerate(stages):
        module = _Members([copy.deepcopy(t.model).eval() for t in tasks]).eval()
        names = [f"{role}_{k}" for k in output_kinds(tasks[0].family, tasks[0].model)]
        example = torch.randn(2, 1, tcfg.input_height, tcfg.input_width, generator=gen)
        with torch.inference_mode():
            ref = module(example)
        n_out = len(ref) if isinstance(ref, tuple) else 1
        if n_out != len(names):
            raise OnnxFormError(f"{model_path}: the {role} network gives {n_out} outputs, expected {len(names)} ({', '.join(names)})")
        proto, exporters[role] = _export_stage(module, example, names, f"{model_path}'s {role} stage ({tasks[0].model.__class__.__name__})")
        for vi, r in zip(proto.graph.output, ref if isinstance(ref, tuple) else (ref,)):  # concrete dims where the exporter left names
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != r.ndim:
                raise OnnxFormError(f"{model_path}: the {role} stage's ONNX output {vi.name} has {len(dims)} dims, torch's {r.ndim}")
            dims[0].Clear()
            dims[0].dim_param = "batch"
            for d, n in zip(list(dims)[1:], r.shape[1:]):
                d.Clear()
                d.dim_value = int(n)
        protos.append((role, proto))
        modules[role], examples[role] = module, example
        st = raw["stages"][i]
        stage_meta.append({
            **{k: v for k, v in st.items() if k != "state_dicts"},
            "members": len(tasks),
            "input_size": [tcfg.input_width, tcfg.input_height],
            "normalize": tcfg.normalize,
            "outputs": [{"name": vi.name, "shape": ["batch", *_dims(vi)[1:]]} for vi in proto.graph.output],
            "output_kind": getattr(tasks[0].model, "output_kind", "dense"),
            "output_stride": int(getattr(tasks[0].model, "output_stride", 1)),
            "decoding": _decoding(tasks[0]),
        })
    if len(protos) == 1:
        model = protos[0][1]
        inputs = {INPUT: {"dtype": "float32", "shape": ["batch", 1, stage_meta[0]["input_size"][1], stage_meta[0]["input_size"][0]]}}
    else:
        model = _merge_stages(protos)
        inputs = {INPUT: {"dtype": "float32", "shape": ["batch", 1, "height", "width"]}, STAGE_INPUT: {"dtype": "int64", "shape": []}}
        for i, st in enumerate(stage_meta):
            st["stage_value"] = i
    model.producer_name, model.producer_version = "fetalbio", __version__
    model.doc_string = f"fetalbio {raw.get('method')}: preprocessing, decoding and thresholds are in the manifest <this file>.json"
    onnx.helper.set_model_props(model, {
        f"{META_PREFIX}format": FORMAT,
        f"{META_PREFIX}format_version": str(FORMAT_VERSION),
        f"{META_PREFIX}method": str(raw.get("method")),
        f"{META_PREFIX}stages": ",".join(r for r, _ in protos),
    })
    data = model.SerializeToString()
    # the written bytes, run in ONNX Runtime, against torch
    sess = _session(data, threads=1)
    diffs = {}
    for i, (role, _) in enumerate(protos):
        feed = {INPUT: examples[role].numpy()}
        if len(protos) > 1:
            feed[STAGE_INPUT] = np.array(i, dtype=np.int64)
        got = sess.run([o["name"] for o in stage_meta[i]["outputs"]], feed)
        with torch.inference_mode():
            ref = modules[role](examples[role])
        refs = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        if [g.shape for g in got] != [r.shape for r in refs]:
            raise OnnxFormError(f"{model_path}: the {role} stage's ONNX outputs have shapes {[g.shape for g in got]}, torch's {[r.shape for r in refs]}")
        diff = max(float(np.max(np.abs(g - r))) if r.size else 0.0 for g, r in zip(got, refs))
        scale = max(1.0, *(float(np.max(np.abs(r))) for r in refs if r.size))
        if not diff <= EXPORT_TOLERANCE * scale:
            raise OnnxFormError(f"{model_path}: the {role} stage's ONNX graph differs from torch by {diff:.3g} (tolerance {EXPORT_TOLERANCE * scale:.3g}); not written")
        diffs[role] = diff
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
        "export": {"opset": OPSET, "exporter": exporters, "max_abs_diff_vs_torch": diffs, "fetalbio": __version__,
                   "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = graph_path.with_name(f".{graph_path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, graph_path)
    write_json(manifest_path, manifest)
    return graph_path, manifest_path, manifest


# ------------------------------------------------------------------------------------------ load
def _session(data: bytes, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # no spin-waiting between runs: the image readers and the decoding share the cores, and on a
    # busy machine spinning threads slow everything (the shipped model at batch 1 on 2 threads of
    # a loaded 2-core machine: 5.8 ms median with spinning, 2.3 ms without)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _ort_reason(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text.rsplit(" : ", 1)[-1][:200]


@dataclass
class OnnxForm:
    """A checked ONNX form: the manifest and an ONNX Runtime session of the graph."""

    graph_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    session: Any
    threads: int

    def stage(self, role: str) -> dict[str, Any]:
        for st in self.manifest["stages"]:
            if st["role"] == role:
                return st
        raise OnnxFormError(f"{self.manifest_path}: no {role} stage")

    def run(self, role: str, batch: np.ndarray) -> list[np.ndarray]:
        """The raw outputs of ``role``'s networks (ensemble-averaged) for a ``(B, 1, H, W)``
        float32 batch."""
        st = self.stage(role)
        feed = {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}
        if "stage_value" in st:
            feed[STAGE_INPUT] = np.array(st["stage_value"], dtype=np.int64)
        return self.session.run([o["name"] for o in st["outputs"]], feed)

    def loaded_model(self) -> LoadedModel:
        """Preprocessing, decoding and flags of the model, from the manifest alone."""
        raw = {k: v for k, v in self.manifest.items() if k not in ("stages",)}
        raw["stages"] = [{**st, "state_dicts": []} for st in self.manifest["stages"]]
        try:
            return model_from_raw(self.manifest_path, raw, "cpu", weights=False)
        except (KeyError, TypeError) as exc:
            raise OnnxFormError(f"{self.manifest_path}: a stage cannot be rebuilt ({_first_line(exc)})") from None


def load_onnx_form(path: Path, threads: int = 0, model_file: Path | None = None) -> OnnxForm:
    """Read and check the ONNX form ``path`` names (``X.onnx``, ``X.onnx.json`` or the model
    file ``X.pt``); ``model_file``: it must have been exported from that file. Raises
    :class:`OnnxFormError` (see the module docstring), FileNotFoundError when neither file is there."""
    graph, manifest_path = onnx_paths(path)
    if not graph.exists() and not manifest_path.exists():
        raise FileNotFoundError(f"no ONNX form: {graph} not found")
    if not manifest_path.is_file():
        raise OnnxFormError(f"{graph}: its manifest {manifest_path.name} is missing (the ONNX form is the graph and <graph>.json)")
    if not graph.is_file():
        raise OnnxFormError(f"{manifest_path}: its graph {graph.name} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OnnxFormError(f"{manifest_path}: not a JSON manifest ({_first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxFormError(f"{manifest_path}: not a fetalbio ONNX manifest (no 'format: {FORMAT}')")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise OnnxFormError(f"{manifest_path}: manifest version {manifest.get('format_version')!r}, this fetalbio reads {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    stages = manifest.get("stages")
    if missing or not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise OnnxFormError(f"{manifest_path}: incomplete manifest (missing {missing or ['stages']})")
    for st in stages:
        gone = [k for k in STAGE_KEYS if k not in st]
        if gone:
            raise OnnxFormError(f"{manifest_path}: incomplete {st.get('role')} stage (missing {gone})")
    data = graph.read_bytes()
    if not data:
        raise OnnxFormError(f"{graph}: empty file, not an ONNX graph")
    try:
        sess = _session(data, threads)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's load errors have no common base class
        raise OnnxFormError(f"{graph}: not a loadable ONNX graph (corrupt or truncated: {_ort_reason(exc)})") from None
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get(f"{META_PREFIX}format") != FORMAT:
        raise OnnxFormError(f"{graph}: not a fetalbio ONNX graph (no '{META_PREFIX}format: {FORMAT}' metadata; a foreign ONNX file?)")
    if sha256_bytes(data) != manifest["graph_sha256"]:
        raise OnnxFormError(f"{graph}: the graph's bytes do not match graph_sha256 in {manifest_path.name} (changed after export?)")
    try:
        _check_matches(graph, manifest_path, manifest, sess, meta)
        form = OnnxForm(graph, manifest_path, manifest, sess, threads)
        _dry_run(form)
    except OnnxFormError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        raise OnnxFormError(f"{manifest_path}: malformed manifest ({_first_line(exc)})") from None
    if model_file is not None:
        want = (manifest.get("source_model") or {}).get("sha256")
        if want != file_sha256(model_file):
            raise OnnxFormError(f"{graph}: exported from another model file than {model_file} (source sha256 differs); "
                                f"re-export it: fetalbio export {model_file} --format onnx")
    return form


def _dry_run(form: OnnxForm) -> None:
    """Each stage runs at its manifest input size and gives the outputs the manifest lists
    (catches an input size that does not fit a two-stage graph, whose input axes are named)."""
    for st in form.manifest["stages"]:
        w, h = (int(v) for v in st["input_size"])
        try:
            outs = form.run(st["role"], np.zeros((1, 1, h, w), np.float32))
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's run errors have no common base class
            raise OnnxFormError(f"{form.manifest_path}: does not match the graph {form.graph_path.name}: the {st['role']} stage does not run "
                                f"at its input_size {w}x{h} (W x H): {_ort_reason(exc)}") from None
        for o, got in zip(st["outputs"], outs):
            if _norm(o["shape"])[1:] != list(got.shape[1:]):
                raise OnnxFormError(f"{form.manifest_path}: does not match the graph {form.graph_path.name}: at input_size {w}x{h} the {st['role']} "
                                    f"stage's output {o['name']!r} has shape {_shape(['batch', *got.shape[1:]])}, the manifest says {_shape(o['shape'])}")


def _check_matches(graph: Path, manifest_path: Path, manifest: dict, sess, meta: dict) -> None:
    """The manifest describes this graph: method, stages, inputs, outputs."""
    def bad(what: str) -> OnnxFormError:
        return OnnxFormError(f"{manifest_path}: does not match the graph {graph.name}: {what}")

    if meta.get(f"{META_PREFIX}method") != str(manifest["method"]):
        raise bad(f"method {manifest['method']!r}, the graph's is {meta.get(f'{META_PREFIX}method')!r}")
    roles = [st["role"] for st in manifest["stages"]]
    if meta.get(f"{META_PREFIX}stages") != ",".join(roles):
        raise bad(f"stages {roles}, the graph's are {meta.get(f'{META_PREFIX}stages', '').split(',')}")
    got_in = {i.name: list(i.shape) for i in sess.get_inputs()}
    want_in = manifest["inputs"]
    if not isinstance(want_in, dict) or set(got_in) != set(want_in):
        raise bad(f"inputs {sorted(want_in) if isinstance(want_in, dict) else want_in}, the graph's are {sorted(got_in)}")
    for name, spec in want_in.items():
        if not isinstance(spec, dict) or _norm(spec.get("shape")) != _norm(got_in[name]):
            raise bad(f"input {name!r} has shape {_shape(got_in[name])}, the manifest says {_shape(spec.get('shape') if isinstance(spec, dict) else spec)}")
    if len(manifest["stages"]) == 1:
        w, h = manifest["stages"][0]["input_size"]
        if _norm(got_in[INPUT])[1:] != [1, h, w]:
            raise bad(f"input {INPUT!r} has shape {_shape(got_in[INPUT])}, the coarse stage's input_size is {w}x{h} (W x H)")
    got_out = {o.name: list(o.shape) for o in sess.get_outputs()}
    names = [o.get("name") for st in manifest["stages"] for o in st["outputs"]]
    if sorted(names) != sorted(got_out):
        raise bad(f"outputs {names}, the graph's are {list(got_out)}")
    for st in manifest["stages"]:
        for o in st["outputs"]:
            if _norm(o.get("shape"))[1:] != _norm(got_out[o["name"]])[1:]:
                raise bad(f"output {o['name']!r} has shape {_shape(got_out[o['name']])}, the manifest says {_shape(o.get('shape'))}")


def _norm(shape) -> list:
    """Concrete dims as ints, symbolic ones as None (their names do not matter)."""
    if not isinstance(shape, (list, tuple)):
        return [shape]
    return [d if isinstance(d, int) and not isinstance(d, bool) else None for d in shape]


def _shape(shape) -> str:
    if not isinstance(shape, (list, tuple)):
        return repr(shape)
    return "(" + ", ".join(str(d) if isinstance(d, int) else "batch" if i == 0 else str(d) for i, d in enumerate(shape)) + ")"


# --------------------------------------------------------------------------------------- backend
class OnnxBackend:
    """The predictor's forward through ONNX Runtime (CPU)."""

    name = "onnx"

    def __init__(self, form: OnnxForm) -> None:
        self.form = form

    def forward(self, role: str, batch: torch.Tensor):
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        outs = [torch.from_numpy(o) for o in self.form.run(role, x)]
        return outs[0] if len(outs) == 1 else outs
