"""Tasks: a method as a whole (targets, loss, decoding, scoring, the rows it trains on).

:data:`TASKS` maps a task family name (``VariantSpec.family``) to its class; a variant names its
family in :mod:`fetalbio.variants`.
"""

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.registry import TASKS
from fetalbio.tasks.base import ImagePrediction, Sample, Task, prediction_ellipse
from fetalbio.tasks.landmark import LandmarkTask
from fetalbio.tasks.refine import RefineTask
from fetalbio.tasks.segmentation import SegmentationTask
from fetalbio.variants import get_variant

TASKS.register("landmark")(LandmarkTask)
TASKS.register("segmentation")(SegmentationTask)
TASKS.register("refine")(RefineTask)


def build_task(variant: str, vcfg: VariantConfig, tcfg: TrainConfig, network: bool = True) -> Task:
    """The task (model, codec/post-processing, loss) of a registered variant; ``network=False``:
    for decoding only, where the task allows it without its network (segmentation and
    refinement: ``model`` is None and no torch is imported)."""
    spec = get_variant(variant)
    return TASKS.get(spec.family)(spec, vcfg, tcfg, network)


__all__ = ["TASKS", "ImagePrediction", "LandmarkTask", "RefineTask", "Sample", "SegmentationTask", "Task", "build_task", "prediction_ellipse"]
