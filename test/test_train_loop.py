"""The training loop on CPU: loss goes down, exact resume, schedule, optimizer groups, init."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metaseg_ros.data.clips import collate_clips
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.model.config import get_config
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.train.config import (
    OptimConfig,
    load_train_config,
    train_config_from_dict,
    train_config_to_dict,
)
from metaseg_ros.train.distributed import StepSampler
from metaseg_ros.train.initialization import init_from_checkpoint
from metaseg_ros.train.optimizer import build_optimizer, lr_factor
from metaseg_ros.train.trainer import Trainer

TINY_OVERRIDES = [
    "model_overrides={num_queries: 12, num_decoder_layers: 2}",
    "init=none", "data.num_videos=4", "data.frames_per_video=6",
    "data.synthetic_size=[64,64]", "data.augment.output_size=[64,64]", "data.num_workers=0",
    "data.clip_frames=3", "loss.num_points=256", "optim.warmup_steps=0", "optim.lr=1e-3",
    "progress_bar=false", "checkpoint_every=0", "log_every=1",
]


def small_config(tmp_path: Path, *extra: str):
    torch.set_num_threads(2)
    return load_train_config(None, [*TINY_OVERRIDES, f"output_dir={tmp_path}", *extra])


def test_a_few_cpu_steps_on_synthetic_clips_reduce_the_loss(tmp_path: Path) -> None:
    config = small_config(tmp_path, "data.min_clip_frames=2", "data.clip_frames=2",
                          "optim.max_steps=20")
    trainer = Trainer(config)
    batch = collate_clips([trainer.dataset[(i, 0)] for i in range(2)])
    losses = [trainer.train_step([batch]).losses["total"] for _ in range(14)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_resume_from_checkpoint_gives_the_identical_next_step(tmp_path: Path) -> None:
    config = small_config(tmp_path, "optim.max_steps=3", "data.clip_frames=3",
                          "optim.grad_accum_steps=2", "optim.batch_size=1")
    first = Trainer(config)
    first.train_step()
    first.train_step()
    checkpoint = first.save()
    expected = first.train_step()
    expected_state = {k: v.clone() for k, v in first.model.state_dict().items()}

    second = Trainer(config)
    second.resume(checkpoint)
    assert second.step == 2
    result = second.train_step()
    assert result.losses == expected.losses
    assert result.grad_norm == expected.grad_norm and result.lr == expected.lr
    for name, value in second.model.state_dict().items():
        assert torch.equal(value, expected_state[name]), name


def test_fit_writes_checkpoints_and_tensorboard_logs(tmp_path: Path) -> None:
    config = small_config(tmp_path, "optim.max_steps=2", "checkpoint_every=1",
                          "keep_checkpoints=1", "data.clip_frames=2")
    trainer = Trainer(config)
    results = trainer.fit()
    assert [r.step for r in results] == [0, 1]
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step_00000002"]  # older one pruned
    assert (checkpoints[0] / "model.safetensors").exists()
    assert trainer.latest_checkpoint() == checkpoints[0]
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_bf16_autocast_step_on_cpu_is_finite(tmp_path: Path) -> None:
    config = small_config(tmp_path, "optim.amp=bf16", "data.clip_frames=2")
    result = Trainer(config).train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        Trainer(small_config(tmp_path, "optim.amp=fp16"))


def test_learning_rate_schedule_warmup_poly_and_step() -> None:
    poly = OptimConfig(max_steps=100, warmup_steps=10, warmup_factor=0.01, poly_power=0.9)
    assert lr_factor(0, poly) == pytest.approx(0.01 * 1.0)
    assert lr_factor(5, poly) == pytest.approx((0.01 * 0.5 + 0.5) * 0.95 ** 0.9)
    assert lr_factor(50, poly) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(100, poly) == 0.0
    step = OptimConfig(max_steps=100, warmup_steps=0, schedule="step",
                       step_milestones=(60, 90), step_gamma=0.1)
    assert [lr_factor(s, step) for s in (0, 59, 60, 95)] == pytest.approx([1, 1, 0.1, 0.01])


def test_optimizer_groups_backbone_lr_and_no_decay_parameters() -> None:
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                     num_decoder_layers=1))
    optimizer = build_optimizer(model, OptimConfig(lr=2e-4, weight_decay=0.05,
                                                   backbone_lr_multiplier=0.1,
                                                   memory_lr_multiplier=10.0))
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert group_of[id(named["backbone._conv_stem.weight"])]["lr"] == pytest.approx(2e-5)
    decoder_weight = named["transformer_decoder.class_embed.weight"]
    assert group_of[id(decoder_weight)]["lr"] == 2e-4
    assert group_of[id(decoder_weight)]["weight_decay"] == 0.05
    memory_weight = named["transformer_decoder.layers.0.memory_attn.attn.q_proj.weight"]
    assert group_of[id(memory_weight)]["lr"] == pytest.approx(2e-3)
    assert group_of[id(memory_weight)]["weight_decay"] == 0.05
    gate = named["transformer_decoder.layers.0.memory_attn.gate"]
    assert group_of[id(gate)]["lr"] == pytest.approx(2e-3)
    for name in ("transformer_decoder.query_embed", "transformer_decoder.layers.0.memory_attn.gate",
                 "transformer_decoder.class_embed.bias"):
        assert group_of[id(named[name])]["weight_decay"] == 0.0, name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_step_sampler_ranks_are_disjoint_and_resume_continues_the_order() -> None:
    samplers = [StepSampler(10, batch_size=2, grad_accum_steps=2, rank=r, world_size=2, seed=1)
                for r in range(2)]
    first_steps = [[next(it) for _ in range(8)] for it in map(iter, samplers)]  # 2 steps each
    keys = first_steps[0][:4] + first_steps[1][:4]
    assert len(set(keys)) == 8  # one step reads 8 distinct samples across the two ranks
    resumed = StepSampler(10, 2, 2, rank=1, world_size=2, seed=1, start_step=1)
    assert [next(iter(resumed)) for _ in range(1)] == first_steps[1][4:5]


@pytest.mark.parametrize("world_size, batch_size, grad_accum_steps", [(1, 1, 1), (2, 2, 2),
                                                                      (3, 2, 4), (4, 3, 1)])
def test_step_positions_cover_each_step_exactly_once(world_size: int, batch_size: int,
                                                     grad_accum_steps: int) -> None:
    """All ranks and micro-steps of step s together read each of the step's
    world * batch * accumulation sample positions exactly once, the steps follow each other
    without gap or overlap, and one dataset pass holds every sample once."""
    samplers = [StepSampler(7, batch_size, grad_accum_steps, rank=r, world_size=world_size,
                            seed=3) for r in range(world_size)]
    per_step = world_size * batch_size * grad_accum_steps
    assert samplers[0].samples_per_step == per_step
    for step in range(5):
        positions = [p for sampler in samplers for m in range(grad_accum_steps)
                     for p in sampler.positions(step, m)]
        assert all(len(sampler.positions(step, m)) == batch_size
                   for sampler in samplers for m in range(grad_accum_steps))
        assert sorted(positions) == list(range(step * per_step, (step + 1) * per_step))
    epochs: dict[int, list[int]] = {}
    for position in range(3 * 7):
        index, epoch = samplers[0].key(position)
        epochs.setdefault(epoch, []).append(index)
    assert {e: sorted(v) for e, v in epochs.items()} == {e: list(range(7)) for e in range(3)}
    assert epochs[0] != epochs[1]  # each pass in its own order


def test_config_yaml_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("model: tiny\noptim: {lr: 1e-4, betas: [0.9, 0.99]}\n"
                    "data: {augment: {output_size: [128, 128]}}\n")
    config = load_train_config(path, ["optim.max_steps=7", "data.kind=davis"])
    assert config.optim.lr == 1e-4 and config.optim.max_steps == 7
    assert config.optim.betas == (0.9, 0.99) and config.data.augment.output_size == (128, 128)
    assert train_config_from_dict(train_config_to_dict(config)) == replace(config)
    with pytest.raises(ValueError, match="unknown keys in optim"):
        load_train_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match=r"data\.kind"):
        load_train_config(None, ["data.kind=coco"])


@pytest.mark.parametrize("recipe", sorted(
    (Path(__file__).resolve().parents[1] / "metaseg_ros" / "train" / "configs").glob("*.yaml")),
    ids=lambda path: path.stem)
def test_every_shipped_recipe_is_a_valid_config_and_model(recipe: Path) -> None:
    """Each recipe parses, validates, and names a model that can be built."""
    config = load_train_config(recipe)
    model = MetaSegmenter(get_config(config.model, **config.model_overrides))
    assert config.optim.max_steps > 0 and model.config.image_size[0] > 0


def test_init_from_checkpoint_maps_class_rows_by_name(tmp_path: Path) -> None:
    source = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                      num_decoder_layers=1,
                                      class_names=("cat", "person", "zebra", "chair")))
    save_checkpoint(source, tmp_path / "source")
    target = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                      num_decoder_layers=1, class_names=("person", "chair",
                                                                         "dog")))
    fresh_dog_row = target.transformer_decoder.class_embed.weight[2].clone()
    summary = init_from_checkpoint(target, tmp_path / "source")
    assert "2/3 classes" in summary
    src_w = source.transformer_decoder.class_embed.weight
    dst_w = target.transformer_decoder.class_embed.weight
    assert torch.equal(dst_w[0], src_w[1]) and torch.equal(dst_w[1], src_w[3])
    assert torch.equal(dst_w[3], src_w[4])  # no-object row
    assert torch.equal(dst_w[2], fresh_dog_row)
    assert torch.equal(target.transformer_decoder.query_feat,
                       source.transformer_decoder.query_feat)
