"""The training loop: clips through the model frame by frame with its memory, losses, AdamW.

One optimizer step = grad_accum_steps micro-batches of batch_size clips per process;
all frames of a clip run through MetaSegmenter in order, the memory of frame t feeding
frame t+1, so the memory bank and the cross-frame attention are trained. Runs the same
on one CPU process (tests), on torchrun + DistributedDataParallel (gloo on CPU, nccl
on GPU), with bf16 autocast or fp16 + GradScaler.

Everything random in a step is a function of (seed, step, sample position), so a run
resumed from a checkpoint makes exactly the steps it would have made without stopping.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from metaseg_ros.data.clips import (
    ClipBatch,
    ClipDataset,
    ClipSamplingConfig,
    ClipTargets,
    collate_clips,
)
from metaseg_ros.data.sources import build_video_source
from metaseg_ros.data.types import VideoSource
from metaseg_ros.model.checkpoint import (
    load_state_dict_checked,
    save_checkpoint,
)
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.model.transformer_decoder import NUM_LEVELS
from metaseg_ros.train.config import TrainConfig, train_config_to_dict
from metaseg_ros.train.distributed import DistributedContext, StepSampler, setup_distributed
from metaseg_ros.train.initialization import initialise_weights, model_config_for
from metaseg_ros.train.losses import (
    FramePrediction,
    LossTerms,
    VideoSetCriterion,
    frame_weights_from_tags,
)
from metaseg_ros.train.optimizer import build_optimizer, lr_factor

STATE_FILE = "training_state.pt"
WEIGHTS_STEM = "model"


class ClipUnroller(nn.Module):
    """Runs a batch of clips (B, T, 3, H, W) through the model frame by frame.

    Returns, per frame, (class_logits, mask_logits, query_embeddings, aux class_0,
    aux mask_0, ...) with the earlier layers' outputs (the final one excluded). One
    module call per step keeps DistributedDataParallel to one forward per backward.
    """

    def __init__(self, model: MetaSegmenter, detach_memory: bool = False) -> None:
        super().__init__()
        self.model = model
        self.detach_memory = detach_memory

    def forward(self, images: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
        memory = self.model.initial_memory(images.shape[0], device=images.device)
        frames = []
        for t in range(images.shape[1]):
            out, aux = self.model.forward_with_aux(images[:, t], memory)
            memory = out.memory
            if self.detach_memory:
                memory = type(memory)(*(m.detach() for m in memory))
            if aux and aux[-1][0] is out.class_logits:
                aux = aux[:-1]
            flat = [x for pair in aux for x in pair]
            frames.append((out.class_logits, out.mask_logits, out.query_embeddings, *flat))
        return tuple(frames)


def set_memory_gates(model: MetaSegmenter, value: float) -> None:
    """Set every memory gate to value (tanh(value) passes): each decoder layer's memory
    attention and, where the model has one, the pixel memory read."""
    with torch.no_grad():
        for layer in model.transformer_decoder.layers:
            layer.memory_attn.gate.fill_(value)
        if model.pixel_memory is not None:
            model.pixel_memory.gate.fill_(value)


def identity_memory_attention(model: MetaSegmenter) -> None:
    """Every memory attention's q/k/v/output projections set to the identity, biases to 0:
    a query then attends mostly to its own slot's past embeddings (queries and their keys
    carry the same learned position) and adds their mean, a "copy the past" start."""
    with torch.no_grad():
        for layer in model.transformer_decoder.layers:
            attention = layer.memory_attn.attn
            for linear in (attention.q_proj, attention.k_proj, attention.v_proj,
                           attention.out_proj):
                linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
                linear.bias.zero_()


def freeze_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Stop the named submodules from training (requires_grad off); returns them, for the
    loop to keep in eval mode. An unknown name is an error."""
    modules = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError as error:
            raise ValueError(f"freeze: MetaSegmenter has no submodule {name!r}") from error
        module.requires_grad_(False)
        modules.append(module)
    return modules


def train_only(model: nn.Module, patterns: Sequence[str]) -> None:
    """Only parameters whose names contain one of `patterns` keep training; a pattern that
    matches nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern in name for name in names):
            raise ValueError(f"train_only: no parameter name contains {pattern!r}")
    for name, parameter in model.named_parameters():
        if not any(pattern in name for pattern in patterns):
            parameter.requires_grad_(False)


def frame_predictions(outputs: Sequence[tuple[torch.Tensor, ...]]) -> list[FramePrediction]:
    """ClipUnroller outputs as FramePrediction records (final layer last)."""
    predictions = []
    for frame in outputs:
        class_logits, mask_logits, embeddings, *flat = frame
        aux = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
        aux = (*aux, (class_logits, mask_logits))
        predictions.append(FramePrediction(class_logits, mask_logits, embeddings, aux))
    return predictions


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and processes)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports."""

    step: int
    losses: dict[str, float]
    grad_norm: float
    lr: float
    clip_frames: int


class Trainer:
    """Owns the model, data order, optimizer, schedule, scaler and checkpoints of one run."""

    def __init__(self, config: TrainConfig, context: DistributedContext | None = None,
                 source: VideoSource | None = None) -> None:
        self.config = config
        self.context = context or setup_distributed(config.device)
        self.device = self.context.device
        torch.manual_seed(_mix(config.seed, 0, self.context.rank))
        self.model_config = model_config_for(config)
        self.model = MetaSegmenter(self.model_config)
        self.init_summary = initialise_weights(self.model, config.init)
        if config.memory_attention_init == "identity":
            identity_memory_attention(self.model)
        if config.memory_gate_init is not None:
            set_memory_gates(self.model, config.memory_gate_init)
        self.frozen = freeze_modules(self.model, config.freeze)
        if config.train_only:
            train_only(self.model, config.train_only)
        self.model.to(self.device)
        self.unroller = ClipUnroller(self.model, config.detach_memory)
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # One-frame clips leave the memory path without gradients, and with fewer decoder
            # layers than feature levels the last levels' input projections are never read:
            # let DDP look for unused parameters then (else it would not average their buckets).
            find_unused = (config.find_unused_parameters or config.data.min_clip_frames < 2
                           or self.model.config.num_decoder_layers < NUM_LEVELS)
            self.wrapped: nn.Module = DistributedDataParallel(
                self.unroller, device_ids=device_ids, find_unused_parameters=find_unused)
        else:
            self.wrapped = self.unroller
        self.criterion = VideoSetCriterion(self.model_config.num_classes, config.loss)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config.optim))
        use_fp16 = config.optim.amp == "fp16"
        if use_fp16 and self.device.type != "cuda":
            raise ValueError("optim.amp fp16 needs CUDA (use bf16 on CPU)")
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
        self.step = 0
        data = config.data
        self.source = source if source is not None else build_video_source(
            data, self.model_config.class_names)
        if tuple(self.source.class_names) != tuple(self.model_config.class_names):
            raise ValueError("the data's class list differs from the model's")
        self.dataset = ClipDataset(
            self.source, ClipSamplingConfig(data.clip_frames, data.max_frame_stride,
                                            data.samples_per_epoch),
            data.augment, seed=config.seed)
        self._loader_iter: Iterator[ClipBatch] | None = None
        self._writer = None

    # ----- data -------------------------------------------------------------------------
    def sampler(self, start_step: int) -> StepSampler:
        """The data order of this process from a step on."""
        optim = self.config.optim
        return StepSampler(len(self.dataset), optim.batch_size, optim.grad_accum_steps,
                           self.context.rank, self.context.world_size, self.config.seed,
                           start_step)

    def _next_micro_batch(self) -> ClipBatch:
        if self._loader_iter is None:
            workers = self.config.data.num_workers
            loader = DataLoader(self.dataset, batch_size=self.config.optim.batch_size,
                                sampler=self.sampler(self.step), collate_fn=collate_clips,
                                num_workers=workers, persistent_workers=workers > 0,
                                pin_memory=self.device.type == "cuda")
            self._loader_iter = iter(loader)
        return next(self._loader_iter)

    def clip_length(self, step: int) -> int:
        """Frames used at a step (same on every process), drawn from min..max clip frames."""
        data = self.config.data
        rng = np.random.default_rng([self.config.seed, step, 17])
        return int(rng.integers(data.min_clip_frames, data.clip_frames + 1))

    # ----- one step ----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        amp = self.config.optim.amp
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def train_step(self, micro_batches: Sequence[ClipBatch] | None = None) -> StepResult:
        """One optimizer step over grad_accum_steps micro-batches (read from the data
        order when not given)."""
        optim = self.config.optim
        step = self.step
        num_frames = self.clip_length(step)
        sampler = self.sampler(step)
        torch.manual_seed(_mix(self.config.seed, step, self.context.rank, 1))
        self.wrapped.train()
        for module in self.frozen:
            module.eval()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(optim.grad_accum_steps):
            batch = (micro_batches[micro] if micro_batches is not None
                     else self._next_micro_batch()).to(self.device)
            images = batch.images[:, :num_frames]
            targets = [ClipTargets(t.masks[:num_frames], t.labels, t.instance_ids)
                       for t in batch.targets]
            weights = frame_weights_from_tags(batch.frame_tags, num_frames,
                                              self.config.loss.degraded_frame_weight)
            generators = [torch.Generator(device=self.device).manual_seed(
                _mix(self.config.seed, position, 2)) for position in sampler.positions(step,
                                                                                      micro)]
            last = micro == optim.grad_accum_steps - 1
            sync = (self.wrapped.no_sync() if self.context.distributed and not last
                    else contextlib.nullcontext())
            with sync:
                with self._autocast():
                    outputs = self.wrapped(images)
                terms: LossTerms = self.criterion(frame_predictions(outputs), targets,
                                                  generators, weights)
                self.scaler.scale(terms.total / optim.grad_accum_steps).backward()
            for name, value in terms.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value / optim.grad_accum_steps
        self.scaler.unscale_(self.optimizer)
        max_norm = optim.clip_grad_norm if optim.clip_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return StepResult(step, sums, grad_norm, lr, num_frames)

    # ----- checkpoints -------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        """Directory of the checkpoint taken after `step` steps."""
        return Path(self.config.output_dir) / "checkpoints" / f"step_{step:08d}"

    def save(self) -> Path:
        """Write model (safetensors + JSON) and training state after the current step
        (rank 0 writes, all ranks wait). Returns the directory."""
        directory = self.checkpoint_dir(self.step)
        if self.context.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.model, directory / WEIGHTS_STEM,
                            extra={"step": self.step, "init": self.init_summary})
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(),
                     "torch_rng": torch.get_rng_state()}
            torch.save(state, directory / STATE_FILE)
            (directory / "train_config.json").write_text(
                json.dumps(train_config_to_dict(self.config), indent=1))
            self._prune_checkpoints()
        if self.context.distributed:
            torch.distributed.barrier()
        return directory

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        root = Path(self.config.output_dir) / "checkpoints"
        done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint directory of this run, if any."""
        root = Path(self.config.output_dir) / "checkpoints"
        done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())
        return done[-1] if done else None

    def resume(self, directory: str | Path) -> None:
        """Restore model, optimizer, schedule, scaler and step from a checkpoint."""
        directory = Path(directory)
        state_dict = load_file(str(directory / f"{WEIGHTS_STEM}.safetensors"),
                               device=str(self.device))
        load_state_dict_checked(self.model, state_dict, strict=True)
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self._loader_iter = None

    # ----- the loop ----------------------------------------------------------------------
    def fit(self, max_steps: int | None = None) -> list[StepResult]:
        """Train until optim.max_steps (or max_steps); log, checkpoint, show progress.
        Returns the results of the steps made by this call."""
        end = self.config.optim.max_steps if max_steps is None else max_steps
        main = self.context.is_main
        progress = None
        if main and self.config.progress_bar:
            from tqdm import tqdm

            progress = tqdm(total=end, initial=self.step, desc="train", dynamic_ncols=True)
        if main and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(self.config.output_dir) / "tb"))
        results = []
        started = time.perf_counter()
        while self.step < end:
            result = self.train_step()
            results.append(result)
            if main and (result.step % self.config.log_every == 0 or self.step == end):
                for name, value in result.losses.items():
                    self._writer.add_scalar(f"loss/{name}", value, result.step)
                self._writer.add_scalar("train/lr", result.lr, result.step)
                self._writer.add_scalar("train/grad_norm", result.grad_norm, result.step)
                self._writer.add_scalar("train/clip_frames", result.clip_frames, result.step)
                elapsed = time.perf_counter() - started
                self._writer.add_scalar("train/seconds_per_step", elapsed / len(results),
                                        result.step)
                if progress is None:  # plain log lines for unattended runs
                    terms = " ".join(f"{k}={v:.3f}" for k, v in result.losses.items())
                    print(f"step {result.step}/{end} lr={result.lr:.2e} "
                          f"grad_norm={result.grad_norm:.3f} "
                          f"s/step={elapsed / len(results):.2f} {terms}", flush=True)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{result.losses['total']:.3f}",
                                     lr=f"{result.lr:.2e}")
            if (self.config.checkpoint_every > 0 and self.step % self.config.checkpoint_every
                    == 0) or self.step == end:
                self.save()
        if progress is not None:
            progress.close()
        if self._writer is not None:
            self._writer.flush()
        return results
