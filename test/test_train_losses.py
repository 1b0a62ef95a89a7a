"""Matcher vs brute force, each loss vs hand-computed values, point sampling, criterion.

float32 losses are compared with float64 arithmetic at rel=1e-5 (about 80 float32 ulps):
far below any real error, far above the last-bit differences between CPUs.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from metaseg_ros.data.clips import ClipTargets
from metaseg_ros.train.losses import (
    FramePrediction,
    LossConfig,
    VideoSetCriterion,
    class_weights,
    contrastive_association_loss,
    dice_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    weighted_cross_entropy,
)
from metaseg_ros.train.matcher import (
    MatcherConfig,
    assign,
    hungarian_match,
    matching_cost,
    pairwise_dice,
    pairwise_sigmoid_ce,
)
from metaseg_ros.train.points import point_sample, uncertain_points


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_point_sample_is_bilinear_with_pixel_centres_and_zero_padding() -> None:
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.0, 0.0]]])
    values = point_sample(image, coords)[0, 0]
    assert torch.allclose(values, torch.tensor([1.0, 2.0, 3.0, 2.5, 0.25]))


def test_uncertain_points_prefer_logits_near_zero() -> None:
    logits = torch.full((1, 1, 32, 32), 8.0)
    logits[..., :, 12:20] = 0.0  # an uncertain vertical band x in [0.375, 0.625)
    generator = torch.Generator().manual_seed(0)
    coords = uncertain_points(logits, 400, oversample_ratio=3.0, importance_ratio=0.75,
                              generator=generator)
    assert coords.shape == (1, 400, 2)
    x = coords[0, :300, 0]
    assert ((x > 0.36) & (x < 0.64)).float().mean() > 0.95  # importance part in the band
    random_x = coords[0, 300:, 0]
    assert ((random_x < 0.3) | (random_x > 0.7)).any()      # the random part is not


def test_sigmoid_focal_loss_by_hand() -> None:
    logits, targets = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    p2 = _sigmoid(2.0)
    point1 = 0.25 * math.log(2) * 0.5 ** 2
    point2 = 0.75 * -math.log(1 - p2) * p2 ** 2
    expected = (point1 + point2) / 2 / 0.5  # mean over points, divided by num_masks=0.5
    assert sigmoid_focal_loss(logits, targets, 0.5).item() == pytest.approx(expected, rel=1e-5)
    no_alpha = (math.log(2) * 0.25 + -math.log(1 - p2) * p2 ** 2) / 2
    assert sigmoid_focal_loss(logits, targets, 1.0, alpha=-1).item() == pytest.approx(
        no_alpha, rel=1e-5)


def test_dice_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p, q = _sigmoid(10.0), _sigmoid(-10.0)
    second = 1 - (2 * p + 1) / (p + q + 1 + 1)
    expected = (1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)) + second
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx(expected / 2, rel=1e-5)


def test_class_losses_by_hand_with_down_weighted_no_object() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])   # C = 2, index 2 = no-object
    targets = torch.tensor([0, 2])
    weights = class_weights(2, 0.1)
    assert weights.tolist() == pytest.approx([1.0, 1.0, 0.1])
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = 1 / (2 + math.e)
    ce = (1.0 * -math.log(p0) + 0.1 * -math.log(p1)) / 1.1
    assert weighted_cross_entropy(logits, targets, weights).item() == pytest.approx(ce, rel=1e-5)
    focal = (1.0 * (1 - p0) ** 2 * -math.log(p0) + 0.1 * (1 - p1) ** 2 * -math.log(p1)) / 1.1
    assert softmax_focal_loss(logits, targets, weights, 2.0).item() == pytest.approx(
        focal, rel=1e-5)


def test_contrastive_association_loss_by_hand() -> None:
    embeddings = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
                               [[0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]]])
    matches = [(torch.tensor([0]), torch.tensor([5])), (torch.tensor([2]), torch.tensor([5]))]
    tau = 0.5
    e = embeddings

    def term(v: torch.Tensor, positive: torch.Tensor, negatives: list[torch.Tensor]) -> float:
        s_pos = float(v @ positive) / tau
        return math.log(1 + sum(math.exp(float(v @ n) / tau - s_pos) for n in negatives))

    expected = (term(e[0, 0], e[1, 2], [e[1, 0], e[1, 1]])
                + term(e[1, 2], e[0, 0], [e[0, 1], e[0, 2]]))
    total, anchors = contrastive_association_loss(embeddings, matches, tau)
    assert anchors == 2
    assert total.item() == pytest.approx(expected, rel=1e-5)
    # unmatched identities across frames give no anchor
    none, count = contrastive_association_loss(
        embeddings, [matches[0], (torch.tensor([1]), torch.tensor([6]))], tau)
    assert count == 0 and none.item() == 0.0


def test_pairwise_costs_by_hand() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ce = pairwise_sigmoid_ce(logits, targets)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert ce[0, 0].item() == pytest.approx((sp(0) + sp(2)) / 2, rel=1e-5)
    assert ce[0, 1].item() == pytest.approx((sp(0) + sp(-2)) / 2, rel=1e-5)
    dice = pairwise_dice(logits, targets)
    p = _sigmoid(2.0)
    assert dice[0, 1].item() == pytest.approx(1 - (2 * p + 1) / (0.5 + p + 1 + 1), rel=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_matches_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_queries, num_targets = 5, 3
    class_logits = torch.randn(num_queries, 4, generator=generator)
    mask_logits = torch.randn(num_queries, 8, 8, generator=generator) * 3
    labels = torch.randint(0, 3, (num_targets,), generator=generator)
    masks = torch.rand(num_targets, 16, 16, generator=generator) > 0.5
    config = MatcherConfig(num_points=64)
    cost = matching_cost(class_logits, mask_logits, labels, masks, config,
                         torch.Generator().manual_seed(99))
    rows, cols = assign(cost)
    best = min(sum(cost[q, t].item() for t, q in enumerate(perm))
               for perm in itertools.permutations(range(num_queries), num_targets))
    assert sorted(cols.tolist()) == [0, 1, 2]
    assert cost[rows, cols].sum().item() == pytest.approx(best, rel=1e-5)


def test_matcher_recovers_planted_assignment() -> None:
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, :10, :10] = masks[1, 20:, :] = masks[2, :, 25:] = True
    labels = torch.tensor([1, 0, 2])
    planted = [4, 0, 2]  # target t is predicted by query planted[t]
    mask_logits = torch.full((5, 8, 8), -6.0)
    class_logits = torch.zeros(5, 4)
    for t, q in enumerate(planted):
        small = torch.nn.functional.interpolate(masks[t][None, None].float(), size=(8, 8),
                                                mode="area")[0, 0]
        mask_logits[q] = (small - 0.5) * 12
        class_logits[q, labels[t]] = 4.0
    rows, cols = hungarian_match(class_logits, mask_logits, labels, masks, MatcherConfig(),
                                 torch.Generator().manual_seed(0))
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 4, 1: 0, 2: 2}


def _clip_targets(frames: int = 2) -> ClipTargets:
    masks = torch.zeros(frames, 2, 32, 32, dtype=torch.bool)
    masks[:, 0, :12, :12] = True
    masks[:, 1, 16:, 10:] = True
    masks[-1, 0] = False  # instance 0 leaves in the last frame
    return ClipTargets(masks, torch.tensor([1, 0]), torch.tensor([7, 9]))


def _perfect_frame(targets: ClipTargets, t: int, num_queries: int = 4,
                   num_classes: int = 3) -> FramePrediction:
    class_logits = torch.zeros(1, num_queries, num_classes + 1)
    class_logits[0, :, -1] = 6.0
    mask_logits = torch.full((1, num_queries, 8, 8), -8.0)
    embeddings = torch.zeros(1, num_queries, 4)
    embeddings[0, :, 3] = 1.0
    for n in range(targets.labels.numel()):
        if not targets.masks[t, n].any():
            continue
        q = n + 1
        small = torch.nn.functional.interpolate(targets.masks[t, n][None, None].float(),
                                                size=(8, 8), mode="area")[0, 0]
        mask_logits[0, q] = (small - 0.5) * 16
        class_logits[0, q] = 0.0
        class_logits[0, q, targets.labels[n]] = 8.0
        embeddings[0, q] = 0.0
        embeddings[0, q, n] = 1.0
    return FramePrediction(class_logits, mask_logits, embeddings)


def test_criterion_prefers_correct_predictions_and_gradients_reach_every_output() -> None:
    targets = _clip_targets()
    criterion = VideoSetCriterion(3, LossConfig(num_points=256))
    perfect = [_perfect_frame(targets, t) for t in range(2)]
    good = criterion(perfect, [targets], [torch.Generator().manual_seed(0)])
    generator = torch.Generator().manual_seed(1)
    random = [FramePrediction(torch.randn(1, 4, 4, generator=generator).requires_grad_(),
                              torch.randn(1, 4, 8, 8, generator=generator).requires_grad_(),
                              torch.randn(1, 4, 4, generator=generator).requires_grad_())
              for _ in range(2)]
    bad = criterion(random, [targets], [torch.Generator().manual_seed(0)])
    assert good.num_masks == 3.0
    for name in ("class_ce", "class_focal", "mask_focal", "dice", "contrastive"):
        assert getattr(good, name).item() < getattr(bad, name).item(), name
    bad.total.backward()
    for frame in random:
        for tensor in (frame.class_logits, frame.mask_logits, frame.query_embeddings):
            assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_deep_supervision_sums_over_layers() -> None:
    targets = _clip_targets(frames=1)
    frame = _perfect_frame(targets, 0)
    layer = (frame.class_logits.clone(), frame.mask_logits.clone())
    deep = FramePrediction(frame.class_logits, frame.mask_logits, frame.query_embeddings,
                           aux_outputs=(layer, layer))
    config = LossConfig(num_points=64)
    one = VideoSetCriterion(3, LossConfig(num_points=64, deep_supervision=False))([frame],
                                                                                 [targets])
    three = VideoSetCriterion(3, config)([deep], [targets])
    assert three.class_ce.item() == pytest.approx(3 * one.class_ce.item(), rel=1e-5)
    assert three.class_focal.item() == pytest.approx(3 * one.class_focal.item(), rel=1e-5)
    assert one.contrastive.item() == 0.0  # a single frame has nothing to associate


def test_frames_without_instances_give_only_no_object_class_loss() -> None:
    empty = ClipTargets(torch.zeros(1, 0, 16, 16, dtype=torch.bool),
                        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    logits = torch.zeros(1, 3, 5, requires_grad=True)
    masks = torch.zeros(1, 3, 4, 4, requires_grad=True)
    terms = VideoSetCriterion(4, LossConfig(num_points=16))(
        [FramePrediction(logits, masks, torch.zeros(1, 3, 2))], [empty])
    assert terms.mask_focal.item() == 0.0 and terms.dice.item() == 0.0
    assert terms.class_ce.item() == pytest.approx(2.0 * math.log(5), rel=1e-5)
    terms.total.backward()
    assert masks.grad is not None


def test_loss_does_not_depend_on_clip_order_given_per_clip_generators() -> None:
    gen = torch.Generator().manual_seed(3)
    targets = [_clip_targets(), ClipTargets(torch.rand(2, 3, 32, 32, generator=gen) > 0.6,
                                            torch.tensor([0, 2, 1]), torch.tensor([1, 2, 3]))]
    frames = [FramePrediction(torch.randn(2, 5, 4, generator=gen),
                              torch.randn(2, 5, 8, 8, generator=gen),
                              torch.randn(2, 5, 6, generator=gen)) for _ in range(2)]
    flipped = [FramePrediction(f.class_logits.flip(0), f.mask_logits.flip(0),
                               f.query_embeddings.flip(0)) for f in frames]
    criterion = VideoSetCriterion(3, LossConfig(num_points=128))
    seeds = [11, 12]
    a = criterion(frames, targets, [torch.Generator().manual_seed(s) for s in seeds])
    b = criterion(flipped, targets[::-1], [torch.Generator().manual_seed(s) for s in seeds[::-1]])
    for name, value in a.as_floats().items():
        assert b.as_floats()[name] == pytest.approx(value, rel=1e-5), name
    assert a.contrastive.item() > 0
