"""fetalbio: fetal head biometry (BPD, OFD, HC) from 2D ultrasound.

Conventions used across the package (see README "Conventions"):

* points are ``(x, y)`` float pixels of the *original* image, origin top-left, at module
  boundaries; a set of landmarks is a ``(4, 2)`` array ordered
  ``[ofd_1, ofd_2, bpd_1, bpd_2]`` (``POINT_NAMES``);
* image sizes are ``(W, H)``; numpy images are ``(H, W)``; tensors are ``(B, C, H, W)``;
* units are carried in names: ``_px``, ``_mm``.
"""

__version__ = "0.1.0"

POINT_NAMES = ("ofd_1", "ofd_2", "bpd_1", "bpd_2")
POINT_COLUMNS = tuple(f"{p}_{a}" for p in POINT_NAMES for a in ("x", "y"))
# per-point uncertainty columns of held-out and predict tables (px)
UNC_COLUMNS = [f"unc_{p}" for p in POINT_NAMES]
