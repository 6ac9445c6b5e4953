"""Task families: what turns a network into BPD/OFD points (targets, loss, decoding)."""

from fetalbio.config import TrainConfig, VariantConfig
from fetalbio.tasks.base import ImagePrediction, Sample, Task
from fetalbio.tasks.landmark import LandmarkTask
from fetalbio.tasks.segmentation import SegmentationTask
from fetalbio.variants import get_variant


def build_task(variant: str, vcfg: VariantConfig, tcfg: TrainConfig) -> Task:
    """The task (model, codec/post-processing, loss) of a registered variant."""
    spec = get_variant(variant)
    cls = LandmarkTask if spec.family == "landmark" else SegmentationTask
    return cls(spec, vcfg, tcfg)


__all__ = ["ImagePrediction", "LandmarkTask", "Sample", "SegmentationTask", "Task", "build_task"]
