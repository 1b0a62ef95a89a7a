"""select_instances against the reference: transformers' Mask2Former
post_process_instance_segmentation, on constructed network outputs.

Where the two definitions coincide (one dominant class per query, frame = network input, so
nothing is resized but the stride-4 masks), classes, scores and masks are equal. Where they
differ on purpose, the difference is pinned down here:

- Flattened top-k: the reference ranks all (query, class) pairs, so one query whose mask is
  confidently two classes yields two instances with the same mask; select_instances gives
  each query its best class only (one object, one detection, which the tracker needs).
- max_instances caps the detections (the reference keeps every pair above the threshold).
- Resizing: the reference resizes binary masks with nearest-neighbour to target_sizes and
  knows no letterbox padding; select_instances resizes logits bilinearly with the letterbox
  undone and thresholds at the frame's resolution (as Mask2Former's own inference does).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metaseg_ros.inference.postprocess import select_instances
from metaseg_ros.inference.preprocess import Letterbox, letterbox_image
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.results import BoundingBox

pytest.importorskip("PIL")
hf_processing = pytest.importorskip(
    "transformers.models.mask2former.image_processing_pil_mask2former")
hf_modeling = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")

INPUT = 384  # the reference post-processes at 384x384: use that as the network input size
QUERIES = 16
CLASSES = 6
# Float results this close may be ordered either way by another CPU's kernels.
NEAR_TIE = 1e-5


def blob_logits(generator: torch.Generator, count: int, size: int = INPUT // 4) -> torch.Tensor:
    """(count, size, size) mask logits: smooth elliptic blobs, positive inside."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    logits = []
    for _ in range(count):
        cy, cx = (torch.rand(2, generator=generator) * size).tolist()
        ry, rx = (4 + torch.rand(2, generator=generator) * size / 4).tolist()
        distance = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
        logits.append(6.0 * (1.0 - distance).clamp(min=-1.5))
    return torch.stack(logits)


def dominant_class_logits(generator: torch.Generator) -> torch.Tensor:
    """(Q, C+1): each query one clear class; no-object varies so scores spread out."""
    logits = torch.randn(QUERIES, CLASSES + 1, generator=generator) * 0.3
    dominant = torch.randint(0, CLASSES, (QUERIES,), generator=generator)
    logits[torch.arange(QUERIES), dominant] += 4.0
    logits[:, -1] = torch.linspace(-2.0, 5.0, QUERIES)
    return logits


def reference_instances(class_logits, mask_logits, threshold):
    """transformers' post-processing: [(label, score, mask)] sorted by score."""
    processor = hf_processing.Mask2FormerImageProcessorPil()
    outputs = hf_modeling.Mask2FormerForUniversalSegmentationOutput(
        class_queries_logits=class_logits[None], masks_queries_logits=mask_logits[None])
    result = processor.post_process_instance_segmentation(outputs, threshold=threshold,
                                                          return_binary_maps=True)[0]
    masks = result["segmentation"]
    if not result["segments_info"]:
        return []
    instances = [(info["label_id"], info["score"], masks[index].bool().numpy())
                 for index, info in enumerate(result["segments_info"])]
    return sorted(instances, key=lambda item: -item[1])


def assert_masks_equal_away_from_ties(got: np.ndarray, expected: np.ndarray,
                                      logits: torch.Tensor, threshold: float = 0.5) -> None:
    """Equal masks, except where the pixel's probability is within rounding of the
    threshold (there two implementations may decide either way); those are few."""
    probability = torch.nn.functional.interpolate(
        logits[None, None], size=got.shape, mode="bilinear", align_corners=False)[0, 0].sigmoid()
    clear = (probability - threshold).abs().numpy() > NEAR_TIE
    assert clear.mean() > 0.999
    np.testing.assert_array_equal(got[clear], expected[clear])


def our_instances(class_logits, mask_logits, settings):
    box = Letterbox.fit(INPUT, INPUT, (INPUT, INPUT))
    embeddings = torch.arange(QUERIES, dtype=torch.float32)[:, None].repeat(1, 8)
    frame = select_instances(class_logits, mask_logits, embeddings, box, settings)
    for detection in frame.detections:  # each detection carries its own query's data
        assert detection.embedding[0] == detection.query_index
        np.testing.assert_allclose(
            detection.class_probs, class_logits[detection.query_index].softmax(-1)[:-1].numpy(),
            rtol=1e-5)
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6])
def test_equal_to_transformers_where_the_definitions_coincide(seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    class_logits = dominant_class_logits(generator)
    mask_logits = blob_logits(generator, QUERIES)
    expected = reference_instances(class_logits, mask_logits, threshold)
    settings = PostprocessSettings(score_threshold=threshold, max_instances=QUERIES,
                                   resolve_overlaps=False)
    got = sorted(our_instances(class_logits, mask_logits, settings).detections,
                 key=lambda d: -d.score)
    assert len(got) == len(expected) > 0
    if threshold == 0.0:
        assert len(got) == QUERIES  # every query: nothing compared vacuously
    for detection, (label, score, mask) in zip(got, expected, strict=True):
        assert detection.class_id == label
        # The reference rounds scores to 1e-6; sums over a mask may differ in the last bits.
        assert detection.score == pytest.approx(score, abs=1e-5)
        assert detection.mask.shape == (INPUT, INPUT)
        assert_masks_equal_away_from_ties(detection.mask, mask, mask_logits[detection.query_index])


def test_one_query_with_two_strong_classes_differs_on_purpose():
    """Flattened top-k (reference) vs one instance per query (ours)."""
    generator = torch.Generator().manual_seed(3)
    class_logits = torch.full((QUERIES, CLASSES + 1), -4.0)
    class_logits[:, -1] = 6.0  # every query is no-object ...
    class_logits[0, [1, 4, CLASSES]] = torch.tensor([5.0, 5.0, -4.0])  # ... but query 0:
    # 'class 1' or 'class 4', equally sure (probability ~0.5 each)
    mask_logits = blob_logits(generator, QUERIES)
    expected = reference_instances(class_logits, mask_logits, threshold=0.3)
    assert sorted(label for label, _, _ in expected) == [1, 4]
    np.testing.assert_array_equal(expected[0][2], expected[1][2])  # one mask, twice
    got = our_instances(class_logits, mask_logits,
                        PostprocessSettings(score_threshold=0.3, max_instances=QUERIES,
                                            resolve_overlaps=False)).detections
    assert len(got) == 1 and got[0].query_index == 0 and got[0].class_id in (1, 4)
    assert got[0].score == pytest.approx(expected[0][1], abs=1e-5)
    assert_masks_equal_away_from_ties(got[0].mask, expected[0][2], mask_logits[0])


def test_max_instances_keeps_the_best_scores():
    generator = torch.Generator().manual_seed(4)
    class_logits = dominant_class_logits(generator)
    mask_logits = blob_logits(generator, QUERIES)
    everything = our_instances(class_logits, mask_logits, PostprocessSettings(
        score_threshold=0.0, max_instances=QUERIES, resolve_overlaps=False)).detections
    best = our_instances(class_logits, mask_logits, PostprocessSettings(
        score_threshold=0.0, max_instances=5, resolve_overlaps=False)).detections
    assert [d.query_index for d in best] == \
        [d.query_index for d in sorted(everything, key=lambda d: -d.score)[:5]]


@pytest.mark.parametrize("resolve_overlaps", [False, True])
def test_every_detection_carries_the_tight_box_of_its_mask(resolve_overlaps):
    generator = torch.Generator().manual_seed(8)
    class_logits = dominant_class_logits(generator)
    mask_logits = blob_logits(generator, QUERIES)
    box = Letterbox.fit(300, 500, (INPUT, INPUT))  # a wide frame: letterboxed, resized
    detections = select_instances(class_logits, mask_logits, torch.zeros(QUERIES, 8), box,
                                  PostprocessSettings(score_threshold=0.0, max_instances=QUERIES,
                                                      resolve_overlaps=resolve_overlaps,
                                                      min_kept_fraction=0.0)).detections
    assert len(detections) >= QUERIES // 2
    for detection in detections:
        assert detection.mask.any()
        assert detection.bbox == BoundingBox.from_mask(detection.mask)


def test_mask_threshold_is_a_probability_on_the_frame():
    generator = torch.Generator().manual_seed(5)
    class_logits = dominant_class_logits(generator)
    class_logits[:, -1] = -5.0
    mask_logits = blob_logits(generator, QUERIES)
    upsampled = torch.nn.functional.interpolate(mask_logits[:, None], size=(INPUT, INPUT),
                                                mode="bilinear", align_corners=False)[:, 0]
    for threshold in (0.3, 0.5, 0.8):
        detections = our_instances(class_logits, mask_logits, PostprocessSettings(
            score_threshold=0.0, mask_threshold=threshold, max_instances=QUERIES,
            resolve_overlaps=False)).detections
        assert len(detections) >= QUERIES - 2
        for detection in detections:
            probability = upsampled[detection.query_index].sigmoid().numpy()
            # Pixels within rounding of the threshold may fall on either side of it.
            clear = np.abs(probability - threshold) > NEAR_TIE
            assert clear.mean() > 0.999
            np.testing.assert_array_equal(detection.mask[clear], (probability > threshold)[clear])


def test_overlaps_resolved_each_pixel_to_the_most_confident_instance():
    generator = torch.Generator().manual_seed(6)
    class_logits = dominant_class_logits(generator)
    class_logits[:, -1] = -5.0
    mask_logits = blob_logits(generator, QUERIES)
    kept = PostprocessSettings(score_threshold=0.0, max_instances=QUERIES,
                               resolve_overlaps=False, min_kept_fraction=0.0)
    overlapping = our_instances(class_logits, mask_logits, kept).detections
    stacked = np.stack([d.mask for d in overlapping])
    assert (stacked.sum(0) > 1).sum() > 100  # the blobs do overlap
    resolved = our_instances(class_logits, mask_logits,
                             dataclasses.replace(kept, resolve_overlaps=True)).detections
    owned = np.stack([d.mask for d in resolved]).sum(0)
    assert owned.max() == 1
    # No pixel is lost: the union stays the same.
    np.testing.assert_array_equal(owned > 0, stacked.sum(0) > 0)
    # Each contested pixel goes to the highest score x pixel probability.
    upsampled = torch.nn.functional.interpolate(mask_logits[:, None], size=(INPUT, INPUT),
                                                mode="bilinear", align_corners=False)[:, 0]
    scores = {d.query_index: d.score for d in overlapping}
    queries = [d.query_index for d in overlapping]
    claims = np.stack([np.where(d.mask, upsampled[d.query_index].sigmoid().numpy()
                                * scores[d.query_index], -1.0) for d in overlapping])
    winner = np.array(queries)[claims.argmax(0)]
    owner = np.full((INPUT, INPUT), -1)
    for detection in resolved:
        owner[detection.mask] = detection.query_index
    contested = stacked.sum(0) > 1
    # Where the best two claims are within rounding of each other either may win (2 of
    # ~64,000 contested pixels here are 4.8e-7 apart); every other pixel must go to the best.
    order = np.argsort(claims, axis=0)[-2:]
    best_two = np.take_along_axis(claims, order, axis=0)
    decided = contested & (best_two[1] - best_two[0] > NEAR_TIE)
    assert decided.sum() > 0.99 * contested.sum()
    np.testing.assert_array_equal(owner[decided], winner[decided])
    top_two = np.array(queries)[order]
    near_tie = contested & ~decided
    assert ((owner == top_two[0]) | (owner == top_two[1]))[near_tie].all()


def test_overlaps_resolved_with_a_zero_score_instance():
    """A class probability that underflows to 0 gives score 0: with threshold 0 the instance
    is kept, and a pixel it shares still goes to an instance holding it."""
    class_logits = torch.full((2, CLASSES + 1), -200.0)
    class_logits[:, -1] = 0.0
    class_logits[1, 0] = 3.0
    mask_logits = torch.full((2, INPUT // 4, INPUT // 4), -6.0)
    mask_logits[0, 10:60, 10:60] = 6.0
    mask_logits[1, 40:90, 40:90] = 6.0
    embeddings = torch.zeros(2, 4)
    box = Letterbox.fit(INPUT, INPUT, (INPUT, INPUT))
    frame = select_instances(class_logits, mask_logits, embeddings, box, PostprocessSettings(
        score_threshold=0.0, max_instances=2, resolve_overlaps=True, min_kept_fraction=0.0))
    scores = {d.query_index: d.score for d in frame.detections}
    assert scores[0] == 0.0 and scores[1] > 0.5
    union = np.zeros((INPUT, INPUT), dtype=int)
    for detection in frame.detections:
        union += detection.mask
    upsampled = torch.nn.functional.interpolate(mask_logits[:, None], size=(INPUT, INPUT),
                                                mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_array_equal(union, (upsampled > 0).any(0).numpy())


def test_instances_left_with_little_of_their_mask_are_dropped():
    """After overlaps are resolved, an instance keeping less than min_kept_fraction of its
    own mask (a near-duplicate of a more confident one) is dropped, as in Mask2Former's
    panoptic inference; one keeping more stays."""
    class_logits = torch.full((3, CLASSES + 1), -5.0)
    class_logits[:, 0] = torch.tensor([4.0, 3.0, 3.5])  # scores: 0 > 2 > 1
    mask_logits = torch.full((3, INPUT // 4, INPUT // 4), -6.0)
    mask_logits[0, 10:50, 10:50] = 6.0
    mask_logits[1, 12:52, 12:52] = 5.0  # almost all inside instance 0: a duplicate
    mask_logits[2, 40:80, 40:80] = 6.0  # a quarter or less shared with instance 0
    box = Letterbox.fit(INPUT, INPUT, (INPUT, INPUT))

    def queries(fraction: float) -> list[int]:
        frame = select_instances(class_logits, mask_logits, torch.zeros(3, 4), box,
                                 PostprocessSettings(score_threshold=0.0, max_instances=3,
                                                     min_kept_fraction=fraction))
        return sorted(d.query_index for d in frame.detections)

    assert queries(0.0) == [0, 1, 2]
    assert queries(0.5) == [0, 2]
    with pytest.raises(ValueError, match="min_kept_fraction"):
        PostprocessSettings(min_kept_fraction=1.5)


def test_nothing_above_the_threshold_gives_an_empty_frame():
    generator = torch.Generator().manual_seed(7)
    class_logits = torch.zeros(QUERIES, CLASSES + 1)
    class_logits[:, -1] = 10.0
    frame = our_instances(class_logits, blob_logits(generator, QUERIES), PostprocessSettings())
    assert frame.detections == () and (frame.height, frame.width) == (INPUT, INPUT)


def test_empty_masks_over_several_chunks_give_an_empty_frame():
    """Candidates evaluated in more than one chunk, none with a pixel above the mask
    threshold: nothing is kept (this once crashed stacking zero rows in the node)."""
    class_logits = torch.zeros(QUERIES, CLASSES + 1)
    class_logits[:, 0] = 5.0
    mask_logits = torch.full((QUERIES, INPUT // 4, INPUT // 4), -8.0)
    for resolve in (False, True):
        frame = select_instances(class_logits, mask_logits, torch.zeros(QUERIES, 4),
                                 Letterbox.fit(INPUT, INPUT, (INPUT, INPUT)),
                                 PostprocessSettings(score_threshold=0.0, max_instances=3,
                                                     resolve_overlaps=resolve))
        assert frame.detections == ()


@pytest.mark.parametrize("field, value", [("score_threshold", -0.1), ("score_threshold", 1.1),
                                          ("mask_threshold", 0.0), ("mask_threshold", 1.0),
                                          ("max_instances", 0)])
def test_thresholds_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        PostprocessSettings(**{field: value})


def test_live_postprocess_changes_are_validated_before_they_reach_the_segmenter():
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=4,
                                     num_decoder_layers=1, pixel_decoder={"encoder_layers": 1}))
    segmenter = StreamingSegmenter(EagerRunner(model))
    segmenter.set_postprocess(dataclasses.replace(segmenter.settings, score_threshold=0.25,
                                                  max_instances=3))
    assert (segmenter.settings.score_threshold, segmenter.settings.max_instances) == (0.25, 3)
    before = segmenter.settings
    with pytest.raises(TypeError):
        segmenter.set_postprocess(dataclasses.replace(before, score_treshold=0.3))
    with pytest.raises(ValueError, match="mask_threshold"):
        segmenter.set_postprocess(dataclasses.replace(before, mask_threshold=1.5))
    assert segmenter.settings == before


def _compare_paths(class_logits, mask_logits, letterbox, settings) -> int:
    """The CPU path (masks inside their boxes) against the whole-frame path (the GPU's):
    the same instances in the same order, equal classes, scores and boxes, and masks equal
    but for pixels within rounding of the threshold (a handful at most). Returns how many
    instances were compared."""
    from metaseg_ros.inference.postprocess import _select_full_frames, _select_in_boxes

    embeddings = torch.arange(len(class_logits), dtype=torch.float32)[:, None].repeat(1, 4)
    boxed = _select_in_boxes(class_logits, mask_logits, embeddings, letterbox, settings)
    full = _select_full_frames(class_logits, mask_logits, embeddings, letterbox, settings)
    assert [d.query_index for d in boxed.detections] == [d.query_index for d in full.detections]
    for a, b in zip(boxed.detections, full.detections, strict=True):
        assert a.class_id == b.class_id and a.score == pytest.approx(b.score, abs=1e-5)
        assert a.mask.shape == b.mask.shape == (letterbox.height, letterbox.width)
        assert (a.mask != b.mask).sum() <= max(3, 1e-4 * b.mask.sum())
        for got, expected in zip((a.bbox.x, a.bbox.y, a.bbox.width, a.bbox.height),
                                 (b.bbox.x, b.bbox.y, b.bbox.width, b.bbox.height), strict=True):
            assert abs(got - expected) <= 1
        np.testing.assert_array_equal(a.embedding, b.embedding)
    return len(full.detections)


@pytest.mark.parametrize("frame", [(480, 640), (720, 1280), (384, 384), (300, 400), (90, 70)])
@pytest.mark.parametrize("resolve, kept_fraction", [(True, 0.5), (True, 0.0), (False, 0.0)])
def test_masks_inside_their_boxes_equal_the_whole_frame_path(frame, resolve, kept_fraction):
    generator = torch.Generator().manual_seed(frame[0] + int(resolve) + int(10 * kept_fraction))
    class_logits = dominant_class_logits(generator)
    mask_logits = blob_logits(generator, QUERIES, size=INPUT // 4)
    letterbox = Letterbox.fit(*frame, (INPUT, INPUT))
    compared = 0
    for threshold in (0.0, 0.3):
        compared += _compare_paths(class_logits, mask_logits, letterbox, PostprocessSettings(
            score_threshold=threshold, max_instances=8, resolve_overlaps=resolve,
            min_kept_fraction=kept_fraction))
    assert compared >= 8


def test_masks_inside_their_boxes_equal_the_whole_frame_path_on_the_shipped_model():
    """Real outputs of the shipped model on real-content frames, at the node's defaults."""
    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.inference.builder import shipped_checkpoint
    from metaseg_ros.model.checkpoint import load_checkpoint

    model = load_checkpoint(shipped_checkpoint("tiny"))
    generator = SyntheticVideoGenerator(SyntheticConfig(image_size=(360, 480), num_frames=4),
                                        seed=5)
    compared = 0
    memory = model.initial_memory(1)
    for video in (1, 2):
        for rgb in generator.clip(video, range(4)).frames:
            images, letterbox = letterbox_image(rgb, model.config.image_size,
                                                model.config.pixel_mean)
            with torch.no_grad():
                out = model(images, memory)
            memory = out.memory
            for settings in (PostprocessSettings(), PostprocessSettings(score_threshold=0.1)):
                compared += _compare_paths(out.class_logits[0], out.mask_logits[0], letterbox,
                                           settings)
    assert compared >= 10


def test_candidates_that_cannot_reach_the_score_threshold_are_not_upsampled(monkeypatch):
    """A mask's mean probability is at most the sigmoid of its largest low-res logit, so
    candidates whose class score x that bound is below the threshold are skipped: fewer masks
    computed, the same instances as the whole-frame path."""
    from metaseg_ros.inference import mask_crops

    generator = torch.Generator().manual_seed(11)
    class_logits = dominant_class_logits(generator)
    # Weak masks: peak probabilities from ~0.53 to ~0.92, against class scores 0.2-0.95.
    mask_logits = blob_logits(generator, QUERIES) \
        * torch.linspace(0.02, 0.4, QUERIES)[torch.randperm(QUERIES, generator=generator)
                                              ][:, None, None]
    letterbox = Letterbox.fit(480, 640, (INPUT, INPUT))
    settings = PostprocessSettings(score_threshold=0.6, max_instances=8)
    cropped = []  # the queries whose masks were computed
    original = mask_crops.FrameMap.crop

    def crop(self, logits, box):
        cropped.extend(q for q in range(QUERIES) if np.array_equal(logits, mask_logits[q]))
        return original(self, logits, box)

    monkeypatch.setattr(mask_crops.FrameMap, "crop", crop)
    class_score = class_logits.softmax(-1)[:, :-1].max(-1).values
    bound = class_score * mask_logits.flatten(1).max(1).values.sigmoid()
    hopeless = {q for q in range(QUERIES) if class_score[q] >= 0.6 and bound[q] < 0.55}
    assert _compare_paths(class_logits, mask_logits, letterbox, settings) >= 2
    assert len(hopeless) >= 2 and cropped and not hopeless & set(cropped)
