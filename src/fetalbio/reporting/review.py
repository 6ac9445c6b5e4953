"""``fetalbio predict --report review.html``: one self-contained page to check measurements by eye.

Every image is a card: its overlay (embedded as a base64 PNG, no file or network access
needed), the measurements with their 90 % intervals, the flag and its reason. The ``failed``
and ``uncertain`` cards come first, then the ``ok`` ones, each group sorted by decreasing
uncertainty, so the measurements that need a look are at the top.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import cv2
import numpy as np

from fetalbio.io import write_text

FLAG_ORDER = {"failed": 0, "uncertain": 1, "ok": 2}
CARD_WIDTH_PX = 420


def _png_data_uri(bgr: np.ndarray) -> str:
    h, w = bgr.shape[:2]
    if w > CARD_WIDTH_PX:
        bgr = cv2.resize(bgr, (CARD_WIDTH_PX, max(1, round(h * CARD_WIDTH_PX / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode an overlay as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _fmt(v, nd: int = 1) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def review_html(cards: list[tuple[dict, np.ndarray | None]], title: str = "fetalbio review") -> str:
    """The page for ``(row, overlay BGR or None)`` pairs; rows are :data:`PREDICT_COLUMNS` dicts."""
    def key(item):
        row = item[0]
        u = row.get("uncertainty", math.nan)
        return (FLAG_ORDER.get(row["flag"], 0), -(u if isinstance(u, float) and math.isfinite(u) else math.inf))

    parts = []
    for row, overlay in sorted(cards, key=key):
        img = f'<img alt="{html.escape(row["image_name"])}" src="{_png_data_uri(overlay)}">' if overlay is not None else '<div class="noimg">unreadable image</div>'
        values = (f'HC {_fmt(row.get("hc_mm"))} mm [{_fmt(row.get("hc_mm_low"))}, {_fmt(row.get("hc_mm_high"))}]<br>'
                  f'BPD {_fmt(row.get("bpd_mm"))} mm &nbsp; OFD {_fmt(row.get("ofd_mm"))} mm<br>'
                  f'GA {_fmt(row.get("ga_weeks"))} wk {html.escape(str(row.get("ga_note") or ""))}<br>'
                  f'expected |HC error| {_fmt(row.get("uncertainty"), 2)} mm')
        parts.append(
            f'<div class="card {html.escape(row["flag"])}" data-flag="{html.escape(row["flag"])}">'
            f'<h2>{html.escape(row["image_name"])} <span class="flag">{html.escape(row["flag"])}</span></h2>{img}'
            f'<p>{values}</p><p class="reason">{html.escape(str(row.get("reason") or ""))}</p></div>')
    counts = {f: sum(r["flag"] == f for r, _ in cards) for f in FLAG_ORDER}
    summary = ", ".join(f"{n} {f}" for f, n in counts.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #f4f4f4; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ background: white; border: 3px solid #2a2; padding: 8px; width: {CARD_WIDTH_PX}px; }}
.card.uncertain {{ border-color: #e90; }} .card.failed {{ border-color: #d22; }}
.card img {{ width: 100%; }} .card h2 {{ font-size: 1em; margin: 0 0 6px; }}
.flag {{ float: right; text-transform: uppercase; }} .reason {{ color: #a33; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1><p id="summary">{len(cards)} images: {summary}. Failed and uncertain first, most uncertain first.</p>
<div class="cards">
{chr(10).join(parts)}
</div>
<script>
// rendered check (used by the browser test): cards and decoded images
const cards = document.querySelectorAll('.card');
const imgs = Array.from(document.querySelectorAll('.card img'));
window.addEventListener('load', () => {{
  document.body.dataset.cards = String(cards.length);
  document.body.dataset.imagesOk = String(imgs.filter(i => i.complete && i.naturalWidth > 0).length);
}});
</script>
</body></html>
"""


def write_review(path: Path, cards: list[tuple[dict, np.ndarray | None]], title: str = "fetalbio review") -> None:
    write_text(Path(path), review_html(cards, title))
