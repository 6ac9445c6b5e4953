"""Pure numpy/OpenCV geometry: landmark semantics, ellipses, biometry."""

from fetalbio.geometry.ellipse import (
    Ellipse,
    ellipse_endpoints,
    ellipse_from_cv2,
    ellipse_from_points,
    ellipse_to_cv2,
    ellipse_to_mask,
    fit_ellipse,
    hc_from_diameters,
    point_ellipse_distance,
    ramanujan_perimeter,
    transform_ellipse,
)
from fetalbio.geometry.masks import (
    FAILURE_REASONS,
    MaskEllipseResult,
    boundary_points,
    estimate_edge_offset_px,
    fill_holes,
    fill_outline,
    largest_component,
    mask_edge_offset_px,
    mask_to_ellipse,
    perimeter_offset_px,
    shrink_ellipse,
)
from fetalbio.geometry.points import (
    REFERENCE_DIRECTION,
    CanonicalResult,
    canonicalize,
    canonicalize_batch,
    diameter_lengths,
    ofd_normal,
    order_pair,
)
from fetalbio.geometry.robust_fit import EllipseFit, fit_ellipse_robust

__all__ = [
    "REFERENCE_DIRECTION",
    "CanonicalResult",
    "canonicalize",
    "canonicalize_batch",
    "diameter_lengths",
    "ofd_normal",
    "order_pair",
    # ellipse
    "Ellipse",
    "EllipseFit",
    "ellipse_endpoints",
    "ellipse_from_cv2",
    "ellipse_from_points",
    "ellipse_to_cv2",
    "ellipse_to_mask",
    "fit_ellipse",
    "fit_ellipse_robust",
    "hc_from_diameters",
    "point_ellipse_distance",
    "ramanujan_perimeter",
    "transform_ellipse",
    # masks
    "FAILURE_REASONS",
    "MaskEllipseResult",
    "boundary_points",
    "estimate_edge_offset_px",
    "mask_edge_offset_px",
    "perimeter_offset_px",
    "shrink_ellipse",
    "fill_holes",
    "fill_outline",
    "largest_component",
    "mask_to_ellipse",
]
