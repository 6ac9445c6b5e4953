"""Measure new images with an exported model: points, BPD/OFD/HC in mm, GA, a flag per image.

An unreadable image is a ``failed`` row with the reason, never an exception that ends the run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fetalbio import POINT_COLUMNS, UNC_COLUMNS
from fetalbio.data.transforms import Letterbox, network_input
from fetalbio.geometry.ellipse import Ellipse
from fetalbio.io import FrameRef, ImageReadError, PixelSize, is_dicom, read_gray8, write_png
from fetalbio.metrics.biometry import diameters_px, ga_weeks_hadlock, ramanujan_hc
from fetalbio.model_file import LoadedModel
from fetalbio.tasks.base import ImagePrediction, average_outputs, prediction_ellipse
from fetalbio.triage import Triage, triage_features

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # and DICOM files, found by content
PREDICT_COLUMNS = ["image_name", *POINT_COLUMNS, "bpd_mm", "ofd_mm", "hc_mm", "hc_mm_low", "hc_mm_high", "bpd_mm_low", "bpd_mm_high", "ofd_mm_low", "ofd_mm_high",
                   "uncertainty", "ga_weeks", "ga_note", *UNC_COLUMNS, "flag", "reason", "pixel_size_mm",
                   "pixel_size_source", "pixel_size_note", "range_note"]
# Hadlock (1984) fitted its HC regression on fetuses of 14-42 weeks, HC about 10-36 cm: outside
# this range no gestational age is given (``ga_note`` says why)
GA_HC_RANGE_MM = (100.0, 360.0)
# A diameter shorter than this is no head (a collapsed prediction): the row is `failed`.
MIN_DIAMETER_PX = 4.0


@dataclass
class Measured:
    """One image's result, before it becomes a CSV row."""

    name: str
    image: np.ndarray | None  # (H, W) uint8; None when unreadable
    prediction: ImagePrediction | None
    pixel_size_mm: float
    flag: str
    reason: str
    pixel_size_source: str = "none"  # option | csv | dicom-us-region | dicom-pixel-spacing | none
    pixel_size_note: str = ""  # why there is no pixel size (or where the file's came from)
    dicom: object | None = None  # the source's fetalbio.io_dicom.DicomSource (DICOM input)


def device_type(device) -> str:
    """``cpu`` / ``cuda`` of a torch.device or of its name (no torch needed)."""
    return str(getattr(device, "type", device))


class TorchBackend:
    """The predictor's forward in torch: channels-last inference copies of the networks (on 2
    CPU threads the shipped 192x128 DeepLabV3+ forward takes ~11.5 ms instead of ~14.5 ms,
    README "Results on the full dataset"), one list per stage, each stage's members averaged."""

    name = "torch"

    def __init__(self, model: LoadedModel, device="cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.nets = [[copy.deepcopy(t.model).eval().to(self.device, memory_format=torch.channels_last) for t in st.tasks] for st in model.stages]

    def forward(self, stage: int, batch):
        import torch

        with torch.inference_mode():
            x = (torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch).to(self.device).contiguous(memory_format=torch.channels_last)
            return average_outputs([net(x) for net in self.nets[stage]])


class Predictor:
    """Preprocess like training (letterbox + normalisation), run the model's stages in order, decode.

    ``backend``: what runs the networks, an object with ``forward(stage, batch)`` (``stage``:
    the index of a stage of ``model.stages``; a normalised float32 ``(B, 1, H, W)`` numpy batch
    in, the raw output(s) out, ensemble-averaged: torch tensors from :class:`TorchBackend` (the
    default), numpy arrays from :class:`~fetalbio.inference.onnx_form.OnnxBackend`, which needs
    no torch). Flags, later stages, decoding and overlays are the same whichever runs them.
    """

    def __init__(self, model: LoadedModel, device="cpu", backend=None) -> None:
        self.model = model
        self.backend = backend if backend is not None else TorchBackend(model, device)
        # the device the networks run on ("cpu" for ONNX Runtime): a torch.device, or its name
        self.device = getattr(self.backend, "device", device)
        tri = getattr(model, "meta", {}).get("triage")
        self.triage = Triage.from_dict(tri) if tri else None

    @property
    def device_type(self) -> str:
        return device_type(self.device)

    def range_note(self, hc_mm: float) -> str:
        """Why a measurement lies outside the HC range the model was trained on ('' inside it,
        without a size, or for a model file that does not record its range)."""
        rng = getattr(self.model, "meta", {}).get("provenance", {}).get("training_hc_range_mm")
        if not rng or not math.isfinite(hc_mm):
            return ""
        lo, hi = rng
        if lo <= hc_mm <= hi:
            return ""
        return f"HC {hc_mm:.0f} mm is outside the {lo:.0f}-{hi:.0f} mm the model was trained on: check it by eye"

    @property
    def runtime(self) -> str:
        return self.backend.name

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The network input ``(1, H, W)`` float32 of ``image`` and its letterbox."""
        lb = Letterbox.fit((image.shape[1], image.shape[0]), self.model.input_size)
        x = network_input(image, lb, self.model.train_cfg.normalize)
        return x[None], lb

    def forward(self, batch: np.ndarray, stage: int = 0):
        """Raw network output(s) of stage ``stage`` (the first: a preprocessed batch; a later
        one: what its task feeds it, e.g. normalised head crops), ensemble-averaged."""
        return self.backend.forward(stage, batch)

    def decode(self, output, letterboxes: list[Letterbox]) -> list[ImagePrediction]:
        return self.model.tasks[0].decode(output, letterboxes)

    def predict_coarse(self, images: Sequence[np.ndarray], pre: Sequence[tuple[np.ndarray, Letterbox]] | None = None) -> list[ImagePrediction]:
        """The first stage's predictions alone (``pre``: the images' :meth:`preprocess`, when
        already done)."""
        if not images:
            return []
        xs, lbs = zip(*(pre if pre is not None else [self.preprocess(im) for im in images]))
        return self.decode(self.forward(np.stack(xs)), list(lbs))

    def predict_arrays(self, images: Sequence[np.ndarray], pre: Sequence[tuple[np.ndarray, Letterbox]] | None = None) -> list[ImagePrediction]:
        """Predictions in original-image pixels for ``(H, W)`` uint8 images (any sizes): the
        first stage, then each later stage of the model."""
        return self.follow(images, self.predict_coarse(images, pre))

    def follow(self, images: Sequence[np.ndarray], previous: list[ImagePrediction]) -> list[ImagePrediction]:
        """The later stages in order, each on the previous stage's predictions of ``images``
        (:meth:`~fetalbio.tasks.base.Task.follow`; unchanged for a one-stage model)."""
        for i, stage in enumerate(self.model.stages[1:], start=1):
            if previous:
                previous = stage.tasks[0].follow(list(images), previous, forward=lambda batch, i=i: self.forward(batch, i))
        return previous

    def flag(self, p: ImagePrediction, size: tuple[int, int] | None = None, image: np.ndarray | None = None, pixel_size_mm: float = math.nan) -> tuple[str, str]:
        """``failed``: no measurement, or a degenerate one (a diameter under
        :data:`MIN_DIAMETER_PX`); ``uncertain``: a point outside the ``size = (W, H)`` image (a
        head cut off by the image border can do that, so it is not a failure) or a mean point
        uncertainty above the model's threshold; ``ok`` otherwise. A model with a triage
        combiner (:mod:`fetalbio.triage`) and the ``image``: its verdict instead of the point
        uncertainty threshold (``failed`` for a picture unlike fetal-head ultrasound), and its
        uncertainty and interval half-width go to ``p.extra['triage']``."""
        if p.status != "ok":
            return "failed", p.reason or p.status
        pts = np.asarray(p.points, dtype=np.float64).reshape(4, 2)
        if not np.isfinite(pts).all():
            return "failed", "non-finite point"
        diam = min(float(np.linalg.norm(pts[1] - pts[0])), float(np.linalg.norm(pts[3] - pts[2])))
        if diam < MIN_DIAMETER_PX:
            return "failed", f"degenerate: diameter {diam:.3g} px < {MIN_DIAMETER_PX} px"
        if size is not None:
            w, h = size
            outside = (pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > h - 0.5)
        if self.triage is not None and image is not None:
            e = prediction_ellipse(p)
            coarse = Ellipse(*p.extra["coarse_ellipse"]) if "coarse_ellipse" in p.extra else None
            o, b = (float(v[0]) for v in diameters_px(pts[None]))
            hc = float(ramanujan_hc(o * pixel_size_mm, b * pixel_size_mm))
            unc = float(np.nanmean(p.uncertainty)) if np.isfinite(p.uncertainty).any() else math.nan
            feats = pd.DataFrame([triage_features(image, e, coarse, float(p.extra.get("fit_residual_px", math.nan)), unc, hc)])
            verdict = self.triage.assess(feats, np.array([hc]), np.array([e is not None])).iloc[0]
            p.extra["triage"] = {"uncertainty": float(verdict["uncertainty"]), "hc_half_width_mm": float(verdict["hc_half_width_mm"])}
            if verdict["flag"] == "failed":
                return "failed", verdict["reason"] or "no head ellipse"
            if size is not None and outside.any():
                return "uncertain", f"{int(outside.sum())} point(s) outside the {w}x{h} image"
            return verdict["flag"], verdict["reason"]
        if size is not None and outside.any():
            return "uncertain", f"{int(outside.sum())} point(s) outside the {w}x{h} image"
        thr = self.model.uncertainty_threshold_px
        u = float(np.nanmean(p.uncertainty)) if np.isfinite(p.uncertainty).any() else math.nan
        if thr is not None and math.isfinite(u) and u > thr:
            return "uncertain", f"uncertainty {u:.3g} px > {thr:.3g} px"
        return "ok", ""

    def measure(  # ~70 lines: the read-ahead pool, the batches and the per-image rows share the loop's state
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        spacing: Callable[[str], float],
        batch_size: int = 8,
        on_result: Callable[[Measured], None] | None = None,
        progress: bool = False,
        read_threads: int = 2,
        spacing_source: str = "csv",
    ) -> pd.DataFrame:
        """Measure every image; one row per image in the order given (see :data:`PREDICT_COLUMNS`).

        ``paths``: files, or :class:`~fetalbio.io.FrameRef` frames of multi-frame DICOM files.
        The pixel size: ``spacing(name)`` when finite (its ``pixel_size_source`` is
        ``spacing_source``: ``option`` or ``csv``), else the DICOM file's (see
        :func:`resolve_pixel_size`).
        ``read_threads`` threads read (decode) and preprocess the next images while the
        networks run (cv2 releases the GIL), at most two batches ahead; 0 reads in line."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        def load(path: Path | FrameRef) -> tuple[np.ndarray | None, str, tuple | None, object | None]:
            try:
                got = read_gray8(path)
            except (ImageReadError, OSError) as exc:
                return None, f"unreadable: {exc}", None, None
            return got.pixels, "", self.preprocess(got.pixels), got.dicom

        items = list(zip(paths, names))
        ahead = 2 * batch_size
        rows: list[dict] = []
        bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress, mininterval=1.0)
        pool = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="fetalbio-read") if read_threads > 0 else None
        pending: dict[int, object] = {}

        def submit_upto(end: int) -> None:
            if pool is None:
                return
            for i in range(min(end, len(items))):
                if i not in pending and i >= done:
                    pending[i] = pool.submit(load, items[i][0])

        done = 0
        try:
            submit_upto(ahead)
            for start in range(0, len(items), batch_size):
                chunk = range(start, min(start + batch_size, len(items)))
                loaded = [(items[i][1], *(pending.pop(i).result() if pool is not None else load(items[i][0]))) for i in chunk]
                done = chunk.stop
                submit_upto(done + ahead)
                good = [(im, pre) for _, im, _, pre, _ in loaded if im is not None]
                preds = iter(self.predict_arrays([im for im, _ in good], [pre for _, pre in good]))
                for name, im, err, _, dicom in loaded:
                    pred = next(preds) if im is not None else None
                    size = resolve_pixel_size(float(spacing(name)), spacing_source, dicom, pred, None if im is None else (im.shape[1], im.shape[0]))
                    px = size.mm
                    flag, reason = ("failed", err) if pred is None else self.flag(pred, (im.shape[1], im.shape[0]), im, px)
                    m = Measured(name, im, pred, px, flag, reason, size.source, size.note, dicom)
                    row = measurement_row(m)
                    rows.append({**row, "range_note": self.range_note(row["hc_mm"])})
                    if on_result is not None:
                        on_result(m)
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return pd.DataFrame(rows, columns=PREDICT_COLUMNS)


def measurement_row(m: Measured) -> dict:
    # a failed row carries no endpoints and no size: nothing was measured
    measured = m.prediction is not None and m.prediction.status == "ok" and m.flag != "failed"
    pts = m.prediction.points if measured else np.full((4, 2), np.nan)
    unc = m.prediction.uncertainty if m.prediction is not None else np.full(4, np.nan)
    ofd_px, bpd_px = (float(v[0]) for v in diameters_px(pts[None]))
    px = m.pixel_size_mm if m.flag != "failed" else math.nan
    ofd_mm, bpd_mm = ofd_px * px, bpd_px * px
    hc_mm = float(ramanujan_hc(ofd_mm, bpd_mm))
    tri = m.prediction.extra.get("triage", {}) if m.prediction is not None and m.flag != "failed" else {}
    half = float(tri.get("hc_half_width_mm", math.nan))
    rel = half / hc_mm if math.isfinite(half) and hc_mm > 0 else math.nan  # BPD/OFD: the same relative width
    ga, ga_note = ga_and_note(hc_mm)
    return {
        "image_name": m.name,
        **dict(zip(POINT_COLUMNS, pts.reshape(-1))),
        "bpd_mm": bpd_mm,
        "ofd_mm": ofd_mm,
        "hc_mm": hc_mm,
        "hc_mm_low": hc_mm - half, "hc_mm_high": hc_mm + half,
        "bpd_mm_low": bpd_mm * (1 - rel), "bpd_mm_high": bpd_mm * (1 + rel),
        "ofd_mm_low": ofd_mm * (1 - rel), "ofd_mm_high": ofd_mm * (1 + rel),
        "uncertainty": float(tri.get("uncertainty", math.nan)),
        "ga_weeks": ga,
        "ga_note": ga_note,
        **dict(zip(UNC_COLUMNS, np.asarray(unc, dtype=np.float64))),
        "flag": m.flag,
        "reason": m.reason,
        "pixel_size_mm": m.pixel_size_mm,
        "pixel_size_source": m.pixel_size_source,
        "pixel_size_note": m.pixel_size_note,
    }


def head_box(p: ImagePrediction | None, size: tuple[int, int] | None) -> tuple[tuple[float, float] | None, tuple[float, float, float, float] | None]:
    """The head's centre and bounding box ``(x0, y0, x1, y1)`` in px, clipped to the ``size =
    (W, H)`` image: of its ellipse, else of its four points; ``(None, None)`` without a head."""
    if p is None or p.status != "ok" or not np.isfinite(p.points).all():
        return None, None
    e = prediction_ellipse(p)
    if e is not None:  # the ellipse's axis-aligned half extents
        hx = math.hypot(e.a * math.cos(e.theta), e.b * math.sin(e.theta))
        hy = math.hypot(e.a * math.sin(e.theta), e.b * math.cos(e.theta))
        centre, box = (e.cx, e.cy), np.array([e.cx - hx, e.cy - hy, e.cx + hx, e.cy + hy])
    else:
        pts = np.asarray(p.points, dtype=np.float64).reshape(4, 2)
        centre, box = tuple(pts.mean(0)), np.concatenate([pts.min(0), pts.max(0)])
    if size is not None:
        box = np.clip(box, 0, [size[0] - 1, size[1] - 1] * 2)
    return (float(centre[0]), float(centre[1])), tuple(float(v) for v in box)


def resolve_pixel_size(given_mm: float, given_source: str, dicom, pred: ImagePrediction | None, size: tuple[int, int] | None) -> PixelSize:
    """The pixel size of one image: ``given_mm`` (from ``--pixel-size`` or ``--spacing``:
    ``given_source``) when finite, else the DICOM file's for where the head is
    (:meth:`fetalbio.io_dicom.DicomSource.pixel_size`), else none, with the reason."""
    if math.isfinite(given_mm):
        return PixelSize(given_mm, given_source)
    if dicom is None and size is None:
        return PixelSize(math.nan, "none", "no pixel size: the image was not read")
    if dicom is None:
        why = "not in the --spacing CSV" if given_source == "csv" else "no --pixel-size or --spacing"
        return PixelSize(math.nan, "none", f"no pixel size: {why}, and the image is not a DICOM file that has one")
    return dicom.pixel_size(*head_box(pred, size))


def ga_and_note(hc_mm: float) -> tuple[float, str]:
    """Hadlock's GA where his regression holds (:data:`GA_HC_RANGE_MM`), else NaN and why."""
    if not math.isfinite(hc_mm):
        return math.nan, "no HC in mm"
    lo, hi = GA_HC_RANGE_MM
    if not lo <= hc_mm <= hi:
        return math.nan, f"HC {hc_mm:.0f} mm outside Hadlock's {lo:.0f}-{hi:.0f} mm"
    return float(ga_weeks_hadlock(hc_mm)), ""


def draw_overlay(image: np.ndarray, p: ImagePrediction | None, row: dict) -> np.ndarray:
    """BGR picture: the head ellipse (yellow), OFD (red), BPD (cyan), the values in the corner.
    A ``failed`` row draws no ellipse and no diameters (nothing was measured), only why."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape
    th = max(1, round(min(w, h) / 300))
    if p is not None and p.status == "ok" and row["flag"] != "failed":
        e = prediction_ellipse(p)
        if e is not None:
            cv2.ellipse(out, ((e.cx, e.cy), (2 * e.a, 2 * e.b), math.degrees(e.theta)), (0, 255, 255), th, cv2.LINE_AA)
        pts = np.round(p.points).astype(int)
        for (i, j), colour in (((0, 1), (0, 0, 255)), ((2, 3), (255, 255, 0))):
            cv2.line(out, tuple(map(int, pts[i])), tuple(map(int, pts[j])), colour, th, cv2.LINE_AA)
            for k in (i, j):
                cv2.circle(out, tuple(map(int, pts[k])), 2 * th + 1, colour, -1, cv2.LINE_AA)
    _put_lines(out, overlay_lines(p, row))
    return out


def overlay_lines(p: ImagePrediction | None, row: dict) -> list[str]:
    """The text of an overlay: name and flag, then the values (GA only where defined, with its
    chart), or why nothing was measured."""
    import textwrap

    lines = [f"{row['image_name']}  [{row['flag']}]"]
    if row["flag"] == "failed":
        return lines + textwrap.wrap(f"nothing measured: {row['reason']}", 44)[:3]
    px = float(row.get("pixel_size_mm", math.nan))
    if math.isfinite(row["hc_mm"]):
        lines.append(f"BPD {row['bpd_mm']:.1f} mm  OFD {row['ofd_mm']:.1f} mm")
        ga = float(row.get("ga_weeks", math.nan))
        lines.append(f"HC {row['hc_mm']:.1f} mm  " + (f"GA {ga:.1f} wk (Hadlock)" if math.isfinite(ga) else "no GA"))
    elif p is not None and p.status == "ok":
        o, b = (float(v[0]) for v in diameters_px(p.points[None]))
        lines.append(f"BPD {b:.1f} px  OFD {o:.1f} px" + ("" if math.isfinite(px) else "  (no pixel size)"))
    return lines


def _put_lines(out: np.ndarray, lines: list[str]) -> None:
    """White text on black boxes in the top-left corner, large enough to read at card size."""
    h, w = out.shape[:2]
    scale = max(0.5, min(w, h) / 450)
    thick = max(1, round(scale * 1.5))
    y = 0
    for text in lines:
        (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(out, (0, y), (tw + 8, y + tht + base + 6), (0, 0, 0), -1)
        cv2.putText(out, text, (4, y + tht + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
        y += tht + base + 6


def output_name(name: str, suffix: str) -> Path:
    """The file name of an image's output: ``x.png`` -> ``x<suffix>``; frame N of a multi-frame
    file (``x.dcm:N``) -> ``x_frameN<suffix>``."""
    base, sep, frame = name.rpartition(":")
    if sep and frame.isdigit():
        return Path(f"{Path(base).with_suffix('')}_frame{frame}{suffix}")
    return Path(name).with_suffix(suffix)


def writer(masks_dir: Path | None, overlays_dir: Path | None) -> Callable[[Measured], None]:
    """``on_result`` callback writing the mask (segmentation models) and the overlay of an image."""

    def write(m: Measured) -> None:
        stem = output_name(m.name, ".png")
        mask = m.prediction.full_mask() if masks_dir is not None and m.prediction is not None else None
        if mask is not None:
            write_png(masks_dir / stem, (mask > 0).astype(np.uint8) * 255)
        if overlays_dir is not None and m.image is not None:
            write_png(overlays_dir / stem, draw_overlay(m.image, m.prediction, measurement_row(m)))

    return write


def collect_images(inputs: Iterable[Path], frames: str | Sequence[int] = "all") -> tuple[list[Path | FrameRef], list[str]]:
    """Image files and their names from folders (their image files and DICOM files, sorted) and
    single files.

    Names are file names; the frames of a multi-frame DICOM file are one item each, a
    :class:`~fetalbio.io.FrameRef` named ``file.dcm:N`` (N from 1): ``frames`` = ``all``,
    ``first`` or frame numbers (see :func:`parse_frames`; a number beyond the file's frames is
    still an item, which fails with the reason). Two inputs with the same name are refused
    (their outputs would overwrite each other).
    """
    files: list[Path] = []
    for inp in inputs:
        inp = Path(inp)
        if inp.is_dir():
            found = sorted(p for p in inp.iterdir() if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p)))
            if not found:
                raise FileNotFoundError(f"{inp}: no image files ({', '.join(IMAGE_SUFFIXES)}, or DICOM)")
            files.extend(found)
        elif inp.exists() or inp.is_symlink():
            files.append(inp)
        else:
            raise FileNotFoundError(f"{inp}: no such file or folder")
    paths: list[Path | FrameRef] = []
    names: list[str] = []
    for f in files:
        for item, name in _frame_items(f, frames):
            paths.append(item)
            names.append(name)
    seen: dict[str, object] = {}
    for p, n in zip(paths, names):
        if n in seen:
            raise ValueError(f"two images are named {n!r} ({seen[n]} and {getattr(p, 'path', p)}); outputs are keyed by file name")
        seen[n] = getattr(p, "path", p)
    return paths, names


def parse_frames(spec: str) -> str | list[int]:
    """``--frames``: ``all``, ``first`` or comma-separated frame numbers from 1 (``2,5``)."""
    text = spec.strip().lower()
    if text in ("all", "first"):
        return text
    try:
        numbers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise ValueError(f"--frames must be all, first or frame numbers from 1 such as 1,3; got {spec!r}")
    return list(dict.fromkeys(numbers))


def _frame_items(path: Path, frames: str | Sequence[int]) -> list[tuple[Path | FrameRef, str]]:
    """A file's items: itself, or for a multi-frame DICOM file one :class:`FrameRef` per frame."""
    if not (path.is_file() and is_dicom(path)):
        return [(path, path.name)]
    from fetalbio.io_dicom import frame_count  # pydicom only when there is a DICOM file

    n = frame_count(path)
    wanted = range(1, n + 1) if frames == "all" else [1] if frames == "first" else list(frames)
    return [(path, path.name) if n == 1 and k == 1 else (FrameRef(path, k), f"{path.name}:{k}") for k in wanted]
