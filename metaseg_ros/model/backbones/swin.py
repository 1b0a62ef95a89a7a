"""Swin Transformer backbone with the original Swin / Mask2Former parameter names.

patch_embed.{proj,norm}, layers.<i>.blocks.<j>.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}, layers.<i>.downsample.{norm,
reduction}, norm0..norm3 (one LayerNorm per output). Inputs of any size are padded to whole
patches and whole windows, as the reference does. Stochastic depth is not implemented
(inference and fine-tuning without drop-path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _relative_position_index(window: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing="ij")).flatten(1)  # (2, N)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]  # (N, N)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", _relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """windows (num_windows*B, N, C); mask (num_windows, N, N) additive or None."""
        count, tokens, channels = windows.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(windows).reshape(count, tokens, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = torch.matmul(q * self.scale, k.transpose(-2, -1))
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(tokens, tokens, self.num_heads).permute(2, 0, 1)
        logits = logits + bias[None]
        if mask is not None:
            num_windows = mask.shape[0]
            logits = logits.reshape(count // num_windows, num_windows, self.num_heads, tokens,
                                    tokens) + mask[None, :, None]
            logits = logits.reshape(count, self.num_heads, tokens, tokens)
        attn = torch.softmax(logits, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(count, tokens, channels)
        return self.proj(out)


class SwinMlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Two-layer MLP."""
        return self.fc2(F.gelu(self.fc1(x)))


def _partition(x: Tensor, window: int) -> Tensor:
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def _merge(windows: Tensor, window: int, batch: int, height: int, width: int) -> Tensor:
    channels = windows.shape[-1]
    x = windows.reshape(batch, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        device: torch.device | None = None, dtype: torch.dtype = torch.float32
                        ) -> Tensor:
    """Additive mask (num_windows, N, N): -100 between tokens of different shifted regions."""
    def regions(size: int) -> Tensor:
        index = torch.arange(size, device=device)
        return (index >= size - window).to(torch.int64) + (index >= size - shift).to(torch.int64)

    region = regions(height)[:, None] * 3 + regions(width)[None, :]  # (H, W)
    region_windows = _partition(region[None, :, :, None].to(dtype), window)[..., 0]  # (nW, N)
    different = (region_windows[:, None, :] != region_windows[:, :, None]).to(dtype)
    return different * -100.0


class SwinBlock(nn.Module):
    """(Shifted) window attention block."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """x (B, H*W, C) -> (B, H*W, C)."""
        batch, _, channels = x.shape
        window = self.window_size
        shortcut = x
        x = self.norm1(x).reshape(batch, height, width, channels)
        pad_bottom = (window - height % window) % window
        pad_right = (window - width % window) % window
        if pad_bottom or pad_right:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_h, padded_w = height + pad_bottom, width + pad_right
        mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shifted_window_mask(padded_h, padded_w, window, self.shift,
                                       device=x.device, dtype=x.dtype)
        windows = self.attn(_partition(x, window), mask)
        x = _merge(windows, window, batch, padded_h, padded_w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_bottom or pad_right:
            x = x[:, :height, :width, :]
        x = shortcut + x.reshape(batch, height * width, channels)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation, LayerNorm, linear reduction to 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """x (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)."""
        batch, _, channels = x.shape
        x = x.reshape(batch, height, width, channels)
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        return self.reduction(self.norm(x.reshape(batch, -1, 4 * channels)))


class SwinStage(nn.Module):
    """Blocks of one resolution followed by an optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection plus LayerNorm."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C, H/p, W/p) with right/bottom zero padding to whole patches."""
        _, _, height, width = x.shape
        p = self.patch_size
        if width % p or height % p:
            x = F.pad(x, (0, (p - width % p) % p, 0, (p - height % p) % p))
        x = self.proj(x)
        batch, channels, h, w = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(batch, channels, h, w)


class SwinTransformer(nn.Module):
    """Swin backbone returning LayerNorm-ed features of all four stages (strides 4..32)."""

    def __init__(self, embed_dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(dims[i], depths[i], num_heads[i], window_size, mlp_ratio,
                      downsample=i < len(depths) - 1) for i in range(len(depths)))
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.channels: tuple[int, ...] = tuple(dims)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 4, 8, 16, 32 as (B, C, H, W)."""
        x = self.patch_embed(x)
        batch, _, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        features = []
        for index, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = block(x, height, width)
            out = getattr(self, f"norm{index}")(x)
            features.append(out.reshape(batch, height, width, -1).permute(0, 3, 1, 2))
            if stage.downsample is not None:
                x = stage.downsample(x, height, width)
                height, width = (height + 1) // 2, (width + 1) // 2
        return features
