"""Training knobs for the memory (issue 14): gate warm start, frozen parts, degraded-frame
loss weight.

Loss comparisons are float32 sums checked at rel=1e-5 against linear combinations of the
same sums (about 80 ulps): far below a real error, far above CPU rounding differences.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaseg_ros.data.clips import ClipTargets, collate_clips
from metaseg_ros.train.config import load_train_config
from metaseg_ros.train.losses import (
    FramePrediction,
    LossConfig,
    VideoSetCriterion,
    frame_weights_from_tags,
)
from metaseg_ros.train.trainer import Trainer, frame_predictions

SMALL = [
    "model_overrides={num_queries: 12, num_decoder_layers: 2}",
    "init=none", "data.num_videos=4", "data.frames_per_video=6",
    "data.synthetic_size=[64,64]", "data.augment.output_size=[64,64]", "data.num_workers=0",
    "data.clip_frames=2", "data.min_clip_frames=2", "loss.num_points=256",
    "optim.warmup_steps=0", "optim.lr=1e-3", "progress_bar=false", "checkpoint_every=0",
]
TERMS = ("class_ce", "class_focal", "mask_focal", "dice")


def small_trainer(tmp_path: Path, *extra: str) -> Trainer:
    torch.set_num_threads(2)
    return Trainer(load_train_config(None, [*SMALL, f"output_dir={tmp_path}", *extra]))


def memory_attention_grads(trainer: Trainer) -> torch.Tensor:
    """Summed |grad| of every memory-attention projection after one 2-frame clip's loss."""
    batch = collate_clips([trainer.dataset[(0, 0)]])
    trainer.model.zero_grad(set_to_none=True)
    outputs = trainer.unroller(batch.images)
    trainer.criterion(frame_predictions(outputs), list(batch.targets)).total.backward()
    total = torch.zeros(())
    for layer in trainer.model.transformer_decoder.layers:
        for name, parameter in layer.memory_attn.attn.named_parameters():
            assert parameter.grad is not None, name
            total = total + parameter.grad.abs().sum()
    return total


def test_gate_warm_start_sets_every_gate_and_lets_the_attention_learn(tmp_path: Path) -> None:
    closed = small_trainer(tmp_path / "closed")
    assert all(float(layer.memory_attn.gate.detach()) == 0.0
               for layer in closed.model.transformer_decoder.layers)
    assert float(memory_attention_grads(closed)) == 0.0  # multiplied by tanh(0) = 0

    opened = small_trainer(tmp_path / "open", "memory_gate_init=0.5")
    assert opened.config.memory_gate_init == 0.5
    gates = [float(layer.memory_attn.gate.detach())
             for layer in opened.model.transformer_decoder.layers]
    assert gates == [0.5, 0.5]
    assert float(memory_attention_grads(opened)) > 1e-6


def test_frozen_parts_get_no_update_and_keep_their_statistics(tmp_path: Path) -> None:
    trainer = small_trainer(tmp_path, "freeze=[backbone, pixel_decoder]",
                            "memory_gate_init=0.5")
    assert trainer.config.freeze == ("backbone", "pixel_decoder")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    batch = collate_clips([trainer.dataset[(i, 0)] for i in range(2)])
    for _ in range(2):
        trainer.train_step([batch])
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.", "pixel_decoder."))]
    assert any("running_mean" in k for k in frozen)  # batch-norm statistics are checked too
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    for name, parameter in trainer.model.named_parameters():
        frozen_name = name.startswith(("backbone.", "pixel_decoder."))
        assert parameter.requires_grad is not frozen_name, name
        assert (id(parameter) in optimised) is not frozen_name, name
    moved = [k for k in before if k.startswith("transformer_decoder.")
             and not torch.equal(before[k], after[k])]
    assert any("memory_attn" in k for k in moved) and any("class_embed" in k for k in moved)


def test_unknown_frozen_part_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no submodule"):
        small_trainer(tmp_path, "freeze=[backbones]")


def _two_clips() -> tuple[list[FramePrediction], list[ClipTargets]]:
    gen = torch.Generator().manual_seed(5)
    targets = []
    for _ in range(2):
        masks = torch.zeros(2, 3, 32, 32, dtype=torch.bool)
        for t in range(2):
            for n in range(3):
                top, left = 2 + 9 * n, 3 + 5 * t + 4 * n
                masks[t, n, top:top + 8, left:left + 10] = True
        targets.append(ClipTargets(masks, torch.tensor([0, 2, 1]), torch.tensor([1, 2, 3])))
    frames = [FramePrediction(torch.randn(2, 5, 4, generator=gen),
                              torch.randn(2, 5, 8, 8, generator=gen),
                              torch.randn(2, 5, 6, generator=gen)) for _ in range(2)]
    return frames, targets


def test_degraded_frame_weight_scales_that_frames_class_and_mask_terms() -> None:
    frames, targets = _two_clips()
    criterion = VideoSetCriterion(3, LossConfig(num_points=128))

    def loss(weights):
        generators = [torch.Generator().manual_seed(s) for s in (21, 22)]
        return criterion(frames, targets, generators, weights).as_floats()

    plain = loss(None)
    assert loss([[1.0, 1.0], [1.0, 1.0]]) == plain
    tripled = loss([[1.0, 3.0], [1.0, 1.0]])  # clip 0, frame 1 weighted 3
    dropped = loss([[1.0, 0.0], [1.0, 1.0]])  # ... and 0
    for name in TERMS:
        share = plain[name] - dropped[name]  # that frame's part of the term
        assert share > 1e-3 * plain[name], name
        assert tripled[name] - plain[name] == pytest.approx(2 * share, rel=1e-5), name
    assert tripled["contrastive"] == plain["contrastive"] == dropped["contrastive"]


def test_frame_weights_follow_the_tags() -> None:
    tags = (("", "blur", "", "noise+occluder"), ())
    assert frame_weights_from_tags(tags, 3, 2.5) == [[1.0, 2.5, 1.0], [1.0, 1.0, 1.0]]
    assert frame_weights_from_tags(tags, 3, 1.0) is None
    assert frame_weights_from_tags(((), ()), 3, 2.5) is None
    config = load_train_config(None, ["loss.degraded_frame_weight=3"])
    assert config.loss.degraded_frame_weight == 3.0


def test_identity_memory_attention_start(tmp_path: Path) -> None:
    trainer = small_trainer(tmp_path, "memory_attention_init=identity")
    for layer in trainer.model.transformer_decoder.layers:
        attention = layer.memory_attn.attn
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj,
                       attention.out_proj):
            assert torch.equal(linear.weight, torch.eye(linear.out_features))
            assert not linear.bias.any()
    with pytest.raises(ValueError, match="memory_attention_init"):
        load_train_config(None, ["memory_attention_init=eye"])


@pytest.mark.parametrize("scope", ["attention", "path"])
def test_memory_lr_scope_chooses_what_the_multiplier_reaches(scope: str) -> None:
    from metaseg_ros.model.config import get_config
    from metaseg_ros.model.metasegmenter import MetaSegmenter
    from metaseg_ros.train.config import OptimConfig
    from metaseg_ros.train.optimizer import build_optimizer

    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                     num_decoder_layers=1))
    optim = OptimConfig(lr=1e-4, memory_lr_multiplier=10.0, memory_lr_scope=scope)
    rate = {id(p): group["lr"] for group in build_optimizer(model, optim).param_groups
            for p in group["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["transformer_decoder.layers.0.memory_attn.gate"])] == pytest.approx(
        1e-3)
    for name in ("memory_reader.feature_proj.weight", "memory_write_proj.weight"):
        assert rate[id(named[name])] == pytest.approx(1e-3 if scope == "path" else 1e-4)
    assert rate[id(named["transformer_decoder.class_embed.weight"])] == pytest.approx(1e-4)


def test_model_card_names_the_memory_training() -> None:
    from metaseg_ros.train.config import train_config_to_dict
    from metaseg_ros.train.release import _degradations, _memory_training

    plain = train_config_to_dict(load_train_config(None, []))
    assert _memory_training(plain) == "" and _degradations(plain["data"]) == ""
    tuned = train_config_to_dict(load_train_config(None, [
        "memory_gate_init=0.3", "freeze=[backbone]", "optim.memory_lr_multiplier=10",
        "loss.degraded_frame_weight=2", "data.degradations=degraded"]))
    words = _memory_training(tuned)
    for part in ("gates started at 0.3", "frozen: backbone", "attention lr x 10.0",
                 "degraded frames x 2.0"):
        assert part in words
    assert "degradations `degraded`" in _degradations(tuned["data"])


def test_train_only_updates_just_the_named_parameters(tmp_path: Path) -> None:
    path = ["memory_attn", "memory_reader", "memory_write_proj"]
    trainer = small_trainer(tmp_path, f"train_only={path}", "freeze=[backbone]",
                            "memory_gate_init=0.5")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = collate_clips([trainer.dataset[(i, 0)] for i in range(2)])
    for _ in range(2):
        trainer.train_step([batch])
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(p in k for p in path) for k in changed), sorted(changed)
    assert any("memory_attn.attn" in k for k in changed)
    assert any(k.startswith("memory_reader.") for k in changed)
    with pytest.raises(ValueError, match="no parameter name contains"):
        small_trainer(tmp_path / "bad", "train_only=[memory_atn]")
