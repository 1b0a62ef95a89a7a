"""MetaSegmenter forward: shapes per config, determinism, finite outputs, deep supervision."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.model import CONFIG_NAMES, MetaSegmenter, get_config
from metaseg_ros.model.layers import Attention

SMALL = (64, 64)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MetaSegmenter(get_config("tiny", image_size=(128, 128))).eval()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_output_shapes_per_config(name):
    torch.manual_seed(0)
    config = get_config(name, image_size=SMALL)
    model = MetaSegmenter(config).eval()
    memory = model.initial_memory(2)
    images = torch.rand(2, 3, *SMALL) * 255
    with torch.no_grad():
        out, aux = model.forward_with_aux(images, memory)
    q, d, c = config.num_queries, config.hidden_dim, config.num_classes
    assert out.class_logits.shape == (2, q, c + 1)
    assert out.mask_logits.shape == (2, q, SMALL[0] // 4, SMALL[1] // 4)
    assert out.query_embeddings.shape == (2, q, d)
    t, cm = config.memory_frames, config.memory.feature_dim
    assert out.memory.features.shape == (2, t, cm, 1, 1)
    assert out.memory.queries.shape == (2, t, q, d)
    assert out.memory.valid.shape == (2, t)
    assert len(aux) == config.num_decoder_layers + 1
    assert torch.equal(aux[-1][0], out.class_logits)
    assert torch.equal(aux[-1][1], out.mask_logits)
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in aux)


def test_parameter_counts_match_mask2former_scale():
    # Mask2Former R50 has 44M parameters and Swin-L 216M; the memory adds a few million.
    counts = {name: sum(p.numel() for p in MetaSegmenter(get_config(name)).parameters())
              for name in ("tiny", "r50")}
    assert 44e6 < counts["r50"] < 48e6
    assert counts["tiny"] < 8e6


def test_forward_is_deterministic(tiny_model):
    images = torch.rand(1, 3, 128, 128) * 255
    memory = tiny_model.initial_memory(1)
    with torch.no_grad():
        first = tiny_model(images, memory)
        second = tiny_model(images, memory)
    assert torch.equal(first.class_logits, second.class_logits)
    assert torch.equal(first.mask_logits, second.mask_logits)
    assert torch.equal(first.memory.features, second.memory.features)


@pytest.mark.parametrize("kind", ["black", "white", "constant", "random", "saturated"])
def test_outputs_finite_on_extreme_images(tiny_model, kind):
    generator = torch.Generator().manual_seed(1)
    images = {
        "black": torch.zeros(1, 3, 128, 128),
        "white": torch.full((1, 3, 128, 128), 255.0),
        "constant": torch.full((1, 3, 128, 128), 77.0),
        "random": torch.rand(1, 3, 128, 128, generator=generator) * 255,
        "saturated": (torch.rand(1, 3, 128, 128, generator=generator) > 0.5).float() * 255,
    }[kind]
    memory = tiny_model.initial_memory(1)
    with torch.no_grad():
        for _ in range(3):  # also with the memory filled by earlier frames
            out = tiny_model(images, memory)
            memory = out.memory
            for tensor in (out.class_logits, out.mask_logits, out.query_embeddings,
                           *out.memory):
                assert torch.isfinite(tensor).all()


def test_batch_entries_are_independent(tiny_model):
    images = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        both = tiny_model(images, tiny_model.initial_memory(2))
        second = tiny_model(images[1:], tiny_model.initial_memory(1))
    torch.testing.assert_close(both.class_logits[1:], second.class_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.mask_logits[1:], second.mask_logits, atol=1e-3, rtol=1e-4)


# The trainable parameters whose gradient the test below does not require to be non-zero.
# Exactly zero at initialisation: added to the deformable encoder's position embedding, it
# reaches the loss only through the sampling offsets and attention weights computed from the
# queries, and Deformable DETR initialises both projections' weights to zero; the first
# optimiser step makes them non-zero (checked below). transformers' Mask2Former has the same
# property (test_fidelity_hf.py checks it), so it is not a bug of this model.
ZERO_GRADIENT_AT_INIT = {"pixel_decoder.level_embed"}


def key_biases(model: MetaSegmenter) -> set[str]:
    """Every attention's key bias: softmax(q . (k + b)) does not change when the same b is
    added to every key, so its gradient is zero in exact arithmetic; what float32 rounding
    leaves (~1e-9 here, 1e-18 in float64) may be exactly zero on another machine."""
    return {f"{name}.k_proj.bias" for name, module in model.named_modules()
            if isinstance(module, Attention)}


def frame_two_gradients(model: MetaSegmenter) -> dict[str, torch.Tensor | None]:
    """Gradients of a loss on frame 2 (frame 1 wrote the memory, frame 2 reads it, so the
    loss reaches the write path too)."""
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(1)
    memory = model(torch.rand(1, 3, 64, 64, generator=generator) * 255,
                   model.initial_memory(1)).memory
    _, aux = model.forward_with_aux(torch.rand(1, 3, 64, 64, generator=generator) * 255, memory)
    loss = sum(c.logsumexp(-1).mean() + m.sigmoid().mean() for c, m in aux)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def check_gradients(grads: dict[str, torch.Tensor | None], allowed_zero: set[str],
                    rounding_only: set[str]) -> None:
    """Every gradient present and finite; all-zero exactly for `allowed_zero`; non-zero for
    the rest but `rounding_only`, which must be negligible next to their weights'."""
    assert [name for name, grad in grads.items()
            if grad is None or not torch.isfinite(grad).all()] == []
    zero = {name for name, grad in grads.items() if not grad.any()}
    assert zero - rounding_only == allowed_zero  # a new zero is a bug, a stale entry too
    for name in rounding_only:
        weight = grads[name.removesuffix("bias") + "weight"]
        assert grads[name].abs().max() <= 1e-4 * weight.abs().max(), name


def test_gradients_reach_every_trainable_part():
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10)).train()
    for layer in model.transformer_decoder.layers:
        layer.memory_attn.gate.data.fill_(0.5)
    rounding_only = key_biases(model)
    assert len(rounding_only) == 3 * len(model.transformer_decoder.layers)
    check_gradients(frame_two_gradients(model), ZERO_GRADIENT_AT_INIT, rounding_only)
    # As after a first optimiser step: with the encoder's offset and attention-weight
    # projections no longer zero, the level embedding gets a gradient too.
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in model.pixel_decoder.encoder:
            for linear in (layer.self_attn.sampling_offsets, layer.self_attn.attention_weights):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
    check_gradients(frame_two_gradients(model), set(), rounding_only)


def test_wrong_inputs_are_refused(tiny_model):
    memory = tiny_model.initial_memory(1)
    with pytest.raises(ValueError, match="divisible"):
        tiny_model(torch.zeros(1, 3, 100, 128), memory)
    with pytest.raises(ValueError, match="initial_memory"):
        tiny_model(torch.zeros(1, 3, 192, 192), memory)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_model(torch.zeros(1, 1, 128, 128), memory)


def test_bfloat16_forward_is_finite_and_close_before_thresholds():
    """bfloat16 runs end to end; up to the pixel decoder (no hard thresholds yet) it stays
    within bfloat16 precision of float32. After that, thresholded attention masks of an
    untrained network may legitimately flip, so only finiteness is checked there."""
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(128, 128), num_queries=20)).eval()
    images = torch.rand(1, 3, 128, 128) * 255

    def pixel_features(net, x):
        return net.pixel_decoder(net.backbone((x.to(net.pixel_mean.dtype) - net.pixel_mean)
                                              / net.pixel_std))

    with torch.no_grad():
        reference = pixel_features(model, images)
        model.to(torch.bfloat16)
        low = pixel_features(model, images)
        memory = model.initial_memory(1)
        assert memory.queries.dtype == torch.bfloat16 and memory.valid.dtype == torch.float32
        out = model(images.to(torch.bfloat16), memory)
        out = model(images.to(torch.bfloat16), out.memory)
    for a, b in zip([*low.multi_scale, low.mask_features],
                    [*reference.multi_scale, reference.mask_features], strict=True):
        assert ((a.float() - b).abs().max() / b.abs().max()).item() < 0.05
    assert out.class_logits.dtype == torch.bfloat16
    assert all(torch.isfinite(t.float()).all() for t in (out.class_logits, out.mask_logits,
                                                          *out.memory))
