"""Proof of fidelity: MetaSegmenter with converted weights computes what transformers'
reference Mask2Former computes.

Both models are built from one random Mask2Former (from_config, no download) with a ResNet-50
backbone and with a Swin backbone; every parameter and BatchNorm statistic is perturbed so
that no zero-initialised tensor hides a mapping error. The converted model must reproduce,
to <= 1e-4 relative error (max |ours - ref| / max |ref|), the backbone features, the pixel
decoder outputs (three levels and mask features) and the class and mask logits of every
decoder stage, in float64 and in float32.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from metaseg_ros.model.convert import (  # noqa: E402
    convert_hf_checkpoint,
    convert_hf_state_dict,
    hf_config_to_metaseg,
)

TOLERANCE = 1e-4
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference|."""
    assert ours.shape == reference.shape
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Make every floating tensor non-trivial (HF zero-initialises offsets, biases, ...)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0, generator=generator)
            else:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)


CASES = {
    # The real ResNet-50 layout; small transformer widths keep CPU time low.
    "resnet50": dict(
        backbone=lambda: transformers.ResNetConfig(
            depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
            out_features=STAGES),
        size=128, extra={}),
    # Swin with window 7 on a 160x160 image: every stage pads to whole windows (40, 20, 10, 5).
    "swin": dict(
        backbone=lambda: transformers.SwinConfig(
            embed_dim=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4], window_size=7,
            out_features=STAGES),
        size=160, extra={}),
    # Pre-norm decoder layers and decoder input projections (feature_size != hidden_dim).
    "swin-prenorm-projected": dict(
        backbone=lambda: transformers.SwinConfig(
            embed_dim=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4], window_size=4,
            out_features=STAGES),
        size=96, extra={"pre_norm": True, "hidden_dim": 96}),
}


def build_pair(case: str):
    spec = CASES[case]
    torch.manual_seed(0)
    options = dict(feature_size=64, mask_feature_size=64, hidden_dim=64,
                   encoder_feedforward_dim=128, encoder_layers=2, decoder_layers=10,
                   num_attention_heads=4, dim_feedforward=128, num_queries=12, num_labels=7)
    options.update(spec["extra"])
    hf_config = transformers.Mask2FormerConfig(backbone_config=spec["backbone"](),
                                               use_pretrained_backbone=False, **options)
    reference = transformers.Mask2FormerForUniversalSegmentation(hf_config).eval()
    perturb(reference, seed=1)
    size = spec["size"]
    config = hf_config_to_metaseg(hf_config.to_dict(), case, image_size=(size, size),
                                  memory_pool_stride=32)
    ours, report = convert_hf_state_dict(reference.state_dict(), config)
    assert report.unused_source_keys == []
    return reference, ours, hf_config


@pytest.fixture(scope="module", params=list(CASES))
def pair(request):
    reference, ours, hf_config = build_pair(request.param)
    return request.param, reference, ours, hf_config


def run_both(reference, ours, dtype: torch.dtype, batch: int = 2):
    reference.to(dtype)
    ours.to(dtype)
    size = ours.config.image_size
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(batch, 3, *size, generator=generator, dtype=dtype) * 255
    pixels = (images - ours.pixel_mean) / ours.pixel_std  # the reference takes normalised input
    with torch.no_grad():
        ref = reference(pixel_values=pixels, output_hidden_states=True,
                        output_auxiliary_logits=True)
        features = ours.backbone(pixels)
        decoded = ours.pixel_decoder(features)
        # A memory full of past frames: at gate 0 (converted image checkpoint) it must not
        # change anything, so the comparison with the image model holds with it.
        memory = ours.initial_memory(batch, dtype=dtype)
        memory = memory._replace(features=torch.randn(memory.features.shape, generator=generator,
                                                      dtype=dtype),
                                 queries=torch.randn(memory.queries.shape, generator=generator,
                                                     dtype=dtype),
                                 valid=torch.ones_like(memory.valid))
        out, aux = ours.forward_with_aux(images, memory)
    return ref, features, decoded, out, aux


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_every_stage_matches_the_reference(pair, dtype):
    name, reference, ours, hf_config = pair
    ref, features, decoded, out, aux = run_both(reference, ours, dtype)
    errors = {}
    for index, (a, b) in enumerate(zip(features, ref.encoder_hidden_states, strict=True)):
        errors[f"backbone stride {4 * 2 ** index}"] = relative_error(a, b)
    for index, (a, b) in enumerate(zip(decoded.multi_scale, ref.pixel_decoder_hidden_states,
                                       strict=True)):
        errors[f"pixel decoder stride {32 // 2 ** index}"] = relative_error(a, b)
    errors["mask features"] = relative_error(decoded.mask_features,
                                             ref.pixel_decoder_last_hidden_state)
    ref_stages = [(d["class_queries_logits"], d["masks_queries_logits"])
                  for d in ref.auxiliary_logits]
    ref_stages.append((ref.class_queries_logits, ref.masks_queries_logits))
    assert len(aux) == len(ref_stages) == hf_config.decoder_layers
    for index, ((cls, mask), (ref_cls, ref_mask)) in enumerate(zip(aux, ref_stages, strict=True)):
        errors[f"stage {index} class logits"] = relative_error(cls, ref_cls)
        errors[f"stage {index} mask logits"] = relative_error(mask, ref_mask)
    # Our query embeddings are the final hidden states after the decoder's LayerNorm.
    with torch.no_grad():
        ref_queries = reference.model.transformer_module.decoder.layernorm(
            ref.transformer_decoder_last_hidden_state)
    errors["query embeddings"] = relative_error(out.query_embeddings, ref_queries)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{name} {dtype}: {worst} off by {errors[worst]:.2e}"
    assert out.class_logits.shape == (2, 12, 8)


def test_open_memory_gates_change_the_result(pair):
    """The comparison is sensitive: with the memory read, outputs leave the image model."""
    _, reference, ours, _ = pair
    ref, _, _, first, _ = run_both(reference, ours, torch.float64)
    gates = [layer.memory_attn.gate for layer in ours.transformer_decoder.layers]
    try:
        for gate in gates:
            gate.data.fill_(1.0)
        images = torch.rand(2, 3, *ours.config.image_size, dtype=torch.float64) * 255
        with torch.no_grad():
            ours(images, ours.initial_memory(2, dtype=torch.float64))
            filled = ours(images, first.memory)
        pixels = (images - ours.pixel_mean) / ours.pixel_std
        with torch.no_grad():
            ref = reference(pixel_values=pixels)
        assert relative_error(filled.class_logits, ref.class_queries_logits) > 1e-3
    finally:
        for gate in gates:
            gate.data.zero_()


def test_saved_checkpoint_directory_converts_identically(tmp_path):
    """save_pretrained writes the on-disk key names (attention.self.query, ...)."""
    reference, in_memory, _ = build_pair("swin")
    reference.save_pretrained(tmp_path / "hf")
    from_disk, report = convert_hf_checkpoint(tmp_path / "hf", image_size=(160, 160))
    assert report.unused_source_keys == []
    ours_state = in_memory.state_dict()
    for key, value in from_disk.state_dict().items():
        if "memory" in key:
            continue
        assert torch.equal(value, ours_state[key]), key
    assert from_disk.class_names == tuple(f"LABEL_{i}" for i in range(7))


def test_pixel_decoder_level_embed_has_no_gradient_at_initialisation_in_the_reference():
    """Why test_model_forward.py allows `pixel_decoder.level_embed` a zero gradient: in the
    reference too it reaches the loss only through the deformable encoder's sampling offsets
    and attention weights, whose projections start at zero (Deformable DETR's initialisation).
    Once those are non-zero (after an optimiser step) it gets a gradient."""
    torch.manual_seed(0)
    hf_config = transformers.Mask2FormerConfig(
        backbone_config=transformers.SwinConfig(embed_dim=32, depths=[1, 1, 1, 1],
                                                num_heads=[2, 2, 4, 4], window_size=4,
                                                out_features=STAGES),
        use_pretrained_backbone=False, feature_size=64, mask_feature_size=64, hidden_dim=64,
        encoder_feedforward_dim=128, encoder_layers=2, decoder_layers=3, num_attention_heads=4,
        dim_feedforward=128, num_queries=8, num_labels=5)
    reference = transformers.Mask2FormerForUniversalSegmentation(hf_config).train()
    pixel_decoder = reference.model.pixel_level_module.decoder
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def level_embed_gradients() -> tuple[torch.Tensor, torch.Tensor]:
        reference.zero_grad(set_to_none=True)
        out = reference(pixel_values=pixels)
        (out.class_queries_logits.logsumexp(-1).mean()
         + out.masks_queries_logits.sigmoid().mean()).backward()
        return (pixel_decoder.level_embed.grad,
                reference.model.transformer_module.level_embed.weight.grad)

    encoder_levels, decoder_levels = level_embed_gradients()
    assert not encoder_levels.any()
    assert decoder_levels.abs().max() > 1e-4  # the decoder's own level embedding does learn
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in pixel_decoder.encoder.layers:
            for linear in (layer.self_attn.sampling_offsets, layer.self_attn.attention_weights):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.1)
    encoder_levels, _ = level_embed_gradients()
    assert encoder_levels.abs().max() > 1e-4


def test_the_benchmarks_reference_pair_computes_the_same_outputs():
    """random_reference_pair (what bench_model.py and bench_reference_ratio.py time): the
    reference built from our config's architecture and the model converted from it agree."""
    from metaseg_ros.model import get_config
    from metaseg_ros.model.convert.hf import random_reference_pair

    config = get_config("r50", image_size=(64, 64))
    torch.manual_seed(0)
    reference, ours = random_reference_pair(config)
    assert not reference.training and not ours.training
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    with torch.inference_mode():
        out = ours(images, ours.initial_memory(1))
        theirs = reference(pixel_values=(images - ours.pixel_mean) / ours.pixel_std)
    assert relative_error(out.class_logits, theirs.class_queries_logits) < TOLERANCE
    assert relative_error(out.mask_logits, theirs.masks_queries_logits) < TOLERANCE
