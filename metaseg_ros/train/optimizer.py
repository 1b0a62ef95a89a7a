"""AdamW with per-part learning rates, and the warm-up + decay schedule."""

from __future__ import annotations

import torch
from torch import nn

from metaseg_ros.train.config import OptimConfig


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; backbone at lr * backbone_lr_multiplier, the memory attentions (decoder and
    pixel read; with memory_lr_scope "path" also the memory reader and write projection) at
    lr * memory_lr_multiplier; no decay on norms, biases, gates and embeddings
    (query/level/slot embeddings), as Mask2Former."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        lr = optim.lr
        if name.startswith("backbone."):
            lr *= optim.backbone_lr_multiplier
        elif ".memory_attn." in name or name.startswith(("pixel_memory.", "mask_memory.")) or (
                optim.memory_lr_scope == "path"
                and name.startswith(("memory_reader.", "memory_write_proj."))):
            lr *= optim.memory_lr_multiplier
        no_decay = parameter.ndim <= 1 or name.endswith(
            ("query_feat", "query_embed", "level_embed", "slot_embed"))
        groups.setdefault((lr, 0.0 if no_decay else optim.weight_decay), []).append(parameter)
    param_groups = [{"params": params, "lr": lr, "weight_decay": decay}
                    for (lr, decay), params in groups.items()]
    return torch.optim.AdamW(param_groups, lr=optim.lr, betas=tuple(optim.betas),
                             weight_decay=optim.weight_decay)


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Multiplier of the base learning rates at a step: linear warm-up from warmup_factor,
    then poly decay (1 - step/max_steps)^power or step decay at the milestones."""
    if step < optim.warmup_steps:
        alpha = step / optim.warmup_steps
        warm = optim.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if optim.schedule == "poly":
        decay = (1 - min(step, optim.max_steps) / optim.max_steps) ** optim.poly_power
    else:
        decay = optim.step_gamma ** sum(step >= m for m in optim.step_milestones)
    return warm * decay
