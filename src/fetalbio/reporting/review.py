"""``fetalbio predict --report review.html``: one self-contained page to review the measurements.

Every image is a card: the image (a scaled JPEG thumbnail; the full image on click), the
measurement drawn over it in an SVG layer (head ellipse, OFD, BPD), the values with their
90 % intervals, the pixel size and where it came from, the flag and its reason in plain words
(the raw reason behind a details toggle). The ``failed`` and ``uncertain`` cards come first,
then the ``ok`` ones, each group sorted by decreasing uncertainty.

The page is a review workflow (``review.js``, inlined): per image *accept*, *correct* (drag the
ellipse's centre, axes and rotation, or the four calipers; HC, BPD, OFD and GA follow live in mm)
or *reject*, with a free-text note; keyboard driven; the state lives in the browser's
localStorage under the run's id (a hash of the predictions), so a reload loses nothing; *Export*
writes ``corrections.csv`` (predict's columns, then
:data:`~fetalbio.data.corrections.CORRECTION_COLUMNS`), which
``fetalbio corrections-to-source`` turns into a labelled data source. Nothing is fetched: no
network, no CDN; it works from ``file://``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from fetalbio import POINT_COLUMNS
from fetalbio.data.corrections import CORRECTION_COLUMNS
from fetalbio.io import write_text
from fetalbio.metrics.biometry import HADLOCK_1984_HC_CM

FLAG_ORDER = {"failed": 0, "uncertain": 1, "ok": 2}
CARD_WIDTH_PX = 420
THUMB_MAX_WIDTH_PX = 480  # a little over the card's width: sharp on most screens
THUMB_MAX_BYTES = 60_000
FULL_MAX_SIDE_PX = 2048
FULL_MAX_BYTES = 140_000  # thumbnail + full image: at most 200 KB per image

# triage signals (fetalbio.triage) in words: what each one says about the image
SIGNAL_WORDS = {
    "log_fit_residual": "the ellipse fits the skull outline loosely",
    "log_point_unc": "the calipers are uncertain",
    "stage_disagreement": "the model's two stages disagree on the head's size",
    "centre_shift": "the model's two stages disagree on where the head is",
    "axis_ratio": "the head's shape (how round it is)",
    "size_frac": "the head's size in the picture",
    "ring_contrast": "how bright the skull ring is against the inside of the head",
    "ring_vs_outside": "how bright the skull ring is against its surroundings",
    "weak_ring": "a faint skull ring",
    "log_hc_mm": "the head's size (errors grow with it)",
    "dark_frac": "the share of near-black pixels",
    "bright_frac": "the share of near-white pixels",
    "mean_intensity": "the overall brightness",
}
# failure reasons of the mask-to-ellipse step (fetalbio.geometry.masks.FAILURE_REASONS)
FIT_FAILURES = {
    "empty_mask": "The model found no head in this picture.",
    "too_small": "What the model found is too small to be a head.",
    "too_few_points": "The head outline the model found is too short to fit an ellipse to.",
    "fit_failed": "No ellipse could be fitted to the head outline the model found.",
    "implausible_axis_ratio": "The outline the model found is too elongated to be a head.",
    "too_large": "The outline the model found is larger than a head can be in this picture.",
    "centre_outside_image": "The head's centre would lie outside the picture.",
    "poor_fit": "The outline the model found is not elliptical enough to measure.",
}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def plain_reason(reason: str) -> str:
    """The reason ``predict`` gives for a flag, as a sentence for a sonographer ('' for none)."""
    r = (reason or "").strip()
    if not r:
        return ""
    # "...: bright_frac 0.03 outside [a, b]" or, with the gate's own words, "...: WORDS (bright_frac ...)"
    if m := re.match(r"not like fetal-head ultrasound: (?:(.+?) \()?(\w+) (\S+) outside \[(\S+), (\S+)\]", r):
        words, signal, v, lo, hi = m.group(1), m.group(2), *(_number(g) for g in m.groups()[2:])
        side = "too high" if v > hi else "too low" if v < lo else "missing"
        return (f"This picture does not look like the fetal-head ultrasound the model was made for "
                f"({words or SIGNAL_WORDS.get(signal, signal) + ' is ' + side}), so nothing was measured.")
    if r.startswith("weak skull outline"):
        return "The skull outline is faint against its surroundings: check that the ellipse sits on the bone."
    if m := re.match(r"expected \|HC error\| (\S+) mm > (\S+) mm, mostly from (\w+)", r):
        return (f"The model expects an HC error of about {m.group(1)} mm on this image (more than the "
                f"{m.group(2)} mm it accepts as ok), mostly because of {SIGNAL_WORDS.get(m.group(3), m.group(3))}.")
    if m := re.match(r"(\d+) point\(s\) outside the (\d+)x(\d+) image", r):
        return (f"{m.group(1)} of the four calipers lie outside the picture: the head is probably cut off "
                f"by the image border.")
    if m := re.match(r"uncertainty (\S+) px > (\S+) px", r):
        return f"The calipers are uncertain (spread {m.group(1)} px, more than the {m.group(2)} px accepted as ok)."
    if r.startswith("degenerate"):
        return "The predicted head collapsed to a line or a point: no plausible head was found."
    if r == "non-finite point":
        return "The model returned no usable calipers."
    if r.startswith("unreadable"):
        return "The image file could not be read."
    key = re.sub(r"^refined fit failed \((.*)\)$", r"\1", r)
    if key in FIT_FAILURES:
        return FIT_FAILURES[key]
    return f"The model flagged this image ({r})."


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(float(v))


def _fmt(v, nd: int = 1) -> str:
    return f"{float(v):.{nd}f}" if _finite(v) else "–"


def ga_text(row: dict) -> str:
    """GA with its chart when defined, else why there is none (in words)."""
    if _finite(row.get("ga_weeks")):
        return f"GA {float(row['ga_weeks']):.1f} weeks (Hadlock 1984, from HC)"
    note = str(row.get("ga_note") or "")
    if m := re.match(r"HC (\S+) mm outside Hadlock's (\S+)-(\S+) mm", note):
        return f"no GA: HC {m.group(1)} mm is outside the {m.group(2)}–{m.group(3)} mm range of Hadlock's 1984 chart"
    if note == "no HC in mm" or not _finite(row.get("hc_mm")):
        return "no GA: no HC in mm"
    return f"no GA: {note}"


# predict's pixel_size_source values, in words
PIXEL_SOURCES = {"option": "--pixel-size", "csv": "the --spacing CSV", "dicom-us-region": "the DICOM file's ultrasound region calibration",
                 "dicom-pixel-spacing": "the DICOM file's Pixel Spacing", "none": "none given"}


def pixel_text(row: dict) -> str:
    """The pixel size used and where it came from (``pixel_size_source`` and
    ``pixel_size_note`` when predict gives them)."""
    px = row.get("pixel_size_mm")
    source = str(row.get("pixel_size_source") or "").strip()
    note = str(row.get("pixel_size_note") or "").strip()
    note = "" if note == "nan" else note
    where = f" (from {PIXEL_SOURCES.get(source, source)})" if source and source != "none" else ""
    if not _finite(px):
        return "no pixel size: values in pixels only" + (f" ({note})" if note else "")
    return f"pixel size {float(px):.4g} mm{where}" + (f"; {note}" if note else "")


def values_html(row: dict) -> str:
    """The model's measurement of one card (the page's script replaces it after a correction)."""
    if not _finite(row.get("hc_mm")):
        if row.get("flag") == "failed":
            return "<p>Nothing measured.</p>"
        return "<p>No pixel size: the model's diameters are in pixels only.</p>"
    interval = (f"90 % interval {_fmt(row.get('hc_mm_low'))}–{_fmt(row.get('hc_mm_high'))} mm"
                if _finite(row.get("hc_mm_low")) else "no interval (no uncertainty for this image)")
    return (f'<p><b class="hc">HC {_fmt(row["hc_mm"])} mm</b> <span class="interval">({interval})</span><br>'
            f'BPD {_fmt(row.get("bpd_mm"))} mm &nbsp; OFD {_fmt(row.get("ofd_mm"))} mm<br>'
            f'<span class="ga">{html.escape(ga_text(row))}</span><br>'
            f'<span class="unc">expected HC error {_fmt(row.get("uncertainty"), 2)} mm</span></p>')


def _jpeg_data_uri(image: np.ndarray, max_width: int, max_bytes: int) -> str:
    """A JPEG of ``image`` scaled to at most ``max_width`` px wide and ``max_bytes`` (lower
    quality, then smaller, until it fits)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    for _ in range(8):
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else image
        for quality in (88, 80, 70, 60):
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("could not encode an image as JPEG")
            if buf.size <= max_bytes:
                return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
        scale *= 0.75
    raise ValueError(f"could not fit a {w}x{h} image in {max_bytes} bytes")


@dataclass(frozen=True)
class CardImage:
    """An image as the page embeds it: its size, a scaled JPEG thumbnail and the full image
    (data URIs), at most 200 KB together. ``predict`` encodes each image as it is measured, so
    a long run keeps these, not the pictures."""

    width: int
    height: int
    thumb: str
    full: str

    @classmethod
    def of(cls, image: np.ndarray) -> "CardImage":
        h, w = image.shape[:2]
        return cls(w, h, _jpeg_data_uri(image, THUMB_MAX_WIDTH_PX, THUMB_MAX_BYTES), _jpeg_data_uri(image, FULL_MAX_SIDE_PX, FULL_MAX_BYTES))


def _json_value(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def run_id(rows: list[dict]) -> str:
    """A short hash of the predictions: the key of the browser's review state."""
    text = json.dumps([{k: _json_value(v) for k, v in r.items()} for r in sorted(rows, key=lambda r: r["image_name"])], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _sort_key(item):
    row = item[0]
    u = row.get("uncertainty", math.nan)
    return (FLAG_ORDER.get(row["flag"], 0), -(float(u) if _finite(u) else math.inf))


def _card_html(i: int, row: dict, image: np.ndarray | CardImage | None) -> tuple[str, str | None]:
    """One card's HTML and its full-size image (a data URI, or None)."""
    name, flag = html.escape(str(row["image_name"])), html.escape(str(row["flag"]))
    full = None
    if image is not None:
        im = image if isinstance(image, CardImage) else CardImage.of(image)
        full, w, h = im.full, im.width, im.height
        view = (f'<div class="view" data-w="{w}" data-h="{h}"><img class="thumb" alt="{name}" src="{im.thumb}">'
                f'<svg class="layer" viewBox="0 0 {w} {h}" preserveAspectRatio="none"></svg></div>')
    else:
        view = '<div class="noimg">unreadable image</div>'
    sentence = plain_reason(str(row.get("reason") or ""))
    reason = (f'<div class="reason"><p>{html.escape(sentence)}</p><details><summary>details</summary>'
              f'<code>{html.escape(str(row["reason"]))}</code></details></div>') if sentence else ""
    return (f'<article class="card {flag}" id="card-{i}" data-index="{i}" data-flag="{flag}" data-name="{name}" tabindex="-1">'
            f'<header><h2>{name}</h2><span class="flag">{flag}</span><span class="status">not reviewed</span></header>{view}'
            f'<div class="values">{values_html(row)}</div><p class="px">{html.escape(pixel_text(row))}</p>{reason}'
            f'<textarea class="note" rows="1" placeholder="note (n)" aria-label="note on {name}"></textarea>'
            f'<div class="actions"><button data-act="accept">Accept <kbd>a</kbd></button>'
            f'<button data-act="edit">Correct <kbd>e</kbd></button><button data-act="reject">Reject <kbd>r</kbd></button>'
            f'<button data-act="undo">Undo <kbd>u</kbd></button></div></article>'), full


def _asset(name: str) -> str:
    return resources.files("fetalbio.reporting").joinpath(name).read_text(encoding="utf-8")


def _script_json(data) -> str:
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def page_data(rows: list[dict], columns: list[str]) -> dict:
    """What the page's script needs: the rows, the run id and the constants Python uses."""
    from fetalbio.inference.predictor import GA_HC_RANGE_MM

    return {"run_id": run_id(rows), "columns": columns, "correction_columns": CORRECTION_COLUMNS,
            "point_columns": list(POINT_COLUMNS), "hadlock_hc_cm": list(HADLOCK_1984_HC_CM),
            "ga_hc_range_mm": list(GA_HC_RANGE_MM), "rows": [{k: _json_value(r.get(k)) for k in columns} for r in rows]}


LEGEND = ('<span class="sw ell"></span> head ellipse (HC) <span class="sw ofd"></span> OFD '
          '<span class="sw bpd"></span> BPD <span class="sw pt"></span> caliper '
          '<span class="sw hcen"></span> centre / axis / rotation handles (while correcting) &nbsp;|&nbsp; border: '
          '<span class="b ok">ok</span> <span class="b uncertain">uncertain</span> <span class="b failed">failed</span>')
KEYS = ("<kbd>j</kbd>/<kbd>k</kbd> or arrows: next/previous &nbsp; <kbd>a</kbd> accept &nbsp; <kbd>e</kbd> correct "
        "(drag a handle) &nbsp; <kbd>r</kbd> reject &nbsp; <kbd>u</kbd> or <kbd>ctrl+z</kbd> undo &nbsp; <kbd>n</kbd> note "
        "&nbsp; <kbd>f</kbd> full image &nbsp; <kbd>Esc</kbd> leave")


def review_html(cards: list[tuple[dict, np.ndarray | CardImage | None]], title: str = "fetalbio review") -> str:
    """The page for ``(row, image or None)`` pairs: rows are ``predict`` rows
    (:data:`~fetalbio.inference.predictor.PREDICT_COLUMNS`, plus any further columns such as
    ``pixel_size_source``), images the (H, W) grayscale (or BGR) pictures as read, or their
    :class:`CardImage`."""
    ordered = sorted(cards, key=_sort_key)
    rows = [dict(r) for r, _ in ordered]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    parts, full = [], {}
    for i, (row, image) in enumerate(ordered):
        card, uri = _card_html(i, row, image)
        parts.append(card)
        if uri is not None:
            full[str(i)] = uri
    counts = {f: sum(r["flag"] == f for r in rows) for f in FLAG_ORDER}
    n = len(rows)
    summary = f"{n} image{'s' if n != 1 else ''}: " + ", ".join(f"{c} {f}" for f, c in counts.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
{_asset("review.css")}
.card {{ width: {CARD_WIDTH_PX}px; }}
</style></head><body>
<header class="top"><h1>{html.escape(title)}</h1>
<p id="summary">{html.escape(summary)}. Failed and uncertain first, most uncertain first.
<span id="progress"></span></p>
<p class="tools"><button id="export">Export corrections.csv</button> <span id="saved"></span></p>
<p class="legend">{LEGEND}</p><p class="keys">{KEYS}</p></header>
<main class="cards">
{chr(10).join(parts)}
</main>
<div id="lightbox" hidden><div class="lb-inner"><img alt="full image"><svg class="layer"></svg></div><p>click or <kbd>Esc</kbd> to close</p></div>
<script type="application/json" id="fb-data">{_script_json(page_data(rows, columns))}</script>
<script type="application/json" id="fb-full">{_script_json(full)}</script>
<script>
{_asset("review.js")}
</script>
</body></html>
"""


def write_review(path: Path, cards: list[tuple[dict, np.ndarray | CardImage | None]], title: str = "fetalbio review") -> None:
    write_text(Path(path), review_html(cards, title))
