"""The ONNX form of a model file: its networks as one ONNX graph, everything else in a JSON
manifest beside it, so that ONNX Runtime -- here (``fetalbio predict --runtime onnx``) or in a
program in another language -- reproduces the measurement from these two files alone.

Layout (``X.pt`` is the model file; the pair can be renamed together, neither names the other):

``X.onnx``, the graph (ONNX opset :data:`OPSET`)
    Input ``image``: float32 ``(batch, 1, H, W)``, letterboxed and z-scored images (dynamic
    batch axis; ``H, W`` the stage's input size). Outputs ``<role>_<kind>`` (``<role><index>``
    where stages share a role): ``logits``
    (segmentation and refinement: the skull logit; sigmoid gives the probability),
    ``heatmaps`` (one map per point), ``coords`` (``(batch, 4, 2)`` normalised x, y); a
    hybrid network gives ``heatmaps`` and ``coords``. An ensemble (several state dicts in a
    stage) is one graph that averages its members' raw outputs, as torch prediction does
    (measured with two DeepLabV3+ members at batch 1 on 2 threads: 17.7 ms as one graph, 18.1 ms
    as one session per member averaged in numpy; and the consumer has nothing to average).

    A model of several stages (coarse-to-fine) is one file holding every stage's graph: a second
    input ``stage`` (int64 scalar, the stage's index) selects one, by an ``If`` per later stage
    ``k`` (``stage > k - 1``: ``then`` stage ``k`` or the next ``If``, ``else`` stage ``k - 1``).
    ``image`` is then ``(batch, 1, height, width)``, each stage at its own input size, and the
    outputs of the stages not run come back empty (batch 0).
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
    ``stage_value`` (several stages: its ``stage`` input) and ``decoding``: the effective decoding settings,
    defaults filled in), ``uncertainty_threshold_px``, ``uncertain_quantile``,
    ``provenance``, ``source_model`` (format version and sha256 of the model file it came
    from), ``preprocessing`` (the letterbox and normalisation, in words) and ``export``
    (exporter per stage, opset, versions, the largest ORT - torch difference measured at
    export). docs/onnx.md shows a consumer.

Export (:func:`fetalbio.inference.onnx_export.export_onnx`, torch's side) uses torch's TorchScript-based exporter (its graph ran the shipped
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
and, when a model file is named too, a form exported from another model file. Loading and
running a form import no torch: ONNX Runtime's outputs stay numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fetalbio.io import file_sha256
from fetalbio.model_file import LoadedModel, model_from_raw

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


# ------------------------------------------------------------------------------------------ load
def first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {text[:200]}"


def ort_session(data: bytes, threads: int = 0):
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

    def run(self, index: int, batch: np.ndarray) -> list[np.ndarray]:
        """The raw outputs of stage ``index``'s networks (ensemble-averaged) for a ``(B, 1, H, W)``
        float32 batch."""
        st = self.manifest["stages"][index]
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
            raise OnnxFormError(f"{self.manifest_path}: a stage cannot be rebuilt ({first_line(exc)})") from None


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
        raise OnnxFormError(f"{manifest_path}: not a JSON manifest ({first_line(exc)})") from None
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
        sess = ort_session(data, threads)
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
        raise OnnxFormError(f"{manifest_path}: malformed manifest ({first_line(exc)})") from None
    if model_file is not None:
        want = (manifest.get("source_model") or {}).get("sha256")
        if want != file_sha256(model_file):
            raise OnnxFormError(f"{graph}: exported from another model file than {model_file} (source sha256 differs); "
                                f"re-export it: fetalbio export {model_file} --format onnx")
    return form


def _dry_run(form: OnnxForm) -> None:
    """Each stage runs at its manifest input size and gives the outputs the manifest lists
    (catches an input size that does not fit a graph of several stages, whose input axes are named)."""
    for i, st in enumerate(form.manifest["stages"]):
        w, h = (int(v) for v in st["input_size"])
        try:
            outs = form.run(i, np.zeros((1, 1, h, w), np.float32))
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

    def forward(self, stage: int, batch: np.ndarray):
        """Raw output(s) of stage ``stage``'s networks, numpy arrays (the tasks decode them as they are)."""
        outs = self.form.run(stage, np.asarray(batch))
        return outs[0] if len(outs) == 1 else outs
