"""Metrics: MOT (MOTA, IDF1, HOTA), video instance segmentation AP, DAVIS J&F.

Inputs are plain data: a sequence is a list of `FrameObjects` (ids + boxes and/or COCO RLE
masks per frame) for the ground truth and one for the prediction.

- mot.py: MOTA, MOTP, IDF1, ID switches, ... through motmetrics 1.4.0 (box or mask IoU);
- hota.py: HOTA, DetA, AssA (TrackEval's definition, implemented here);
- vis.py: YouTube-VIS video AP / AR (video IoU + pycocotools' COCOeval);
- davis.py: DAVIS J&F;
- motmetrics_compat.py: the scoped `np.asfarray` stand-in motmetrics 1.4.0 needs on numpy 2.
"""

from metaseg_ros.eval.davis import JAndF, boundary_f_measure, davis_j_and_f, region_similarity
from metaseg_ros.eval.frames import FrameObjects, encode_masks, load_mot_challenge
from metaseg_ros.eval.hota import HotaMetrics, combine_hota, hota_from_similarities, hota_metrics
from metaseg_ros.eval.mot import MotMetrics, mot_accumulator, mot_metrics, mot_metrics_combined
from metaseg_ros.eval.similarity import box_iou, frame_iou, mask_iou
from metaseg_ros.eval.vis import VideoTrack, VisMetrics, tracks_from_frames, video_ap

__all__ = [
    "FrameObjects",
    "HotaMetrics",
    "JAndF",
    "MotMetrics",
    "VideoTrack",
    "VisMetrics",
    "boundary_f_measure",
    "box_iou",
    "combine_hota",
    "davis_j_and_f",
    "encode_masks",
    "frame_iou",
    "hota_from_similarities",
    "hota_metrics",
    "load_mot_challenge",
    "mask_iou",
    "mot_accumulator",
    "mot_metrics",
    "mot_metrics_combined",
    "region_similarity",
    "tracks_from_frames",
    "video_ap",
]
