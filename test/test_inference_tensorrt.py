"""The tensorrt backend up to the engine build, on CPU.

TensorRT cannot be installed here, so the engine build itself (torch_tensorrt.dynamo.compile)
and the engine's parity are not run. What is tested: the float16 program Torch-TensorRT would
compile (inputs, dtypes, no grid_sample or data-dependent ops, outputs close to float32
eager), the compile options for the documented API versions, and that a missing or unusable
torch_tensorrt or a missing CUDA device gives one clear error naming what is missing, before
anything is exported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest
import torch

from metaseg_ros.inference.artifacts import ExportSettings, artifact_fingerprint
from metaseg_ros.inference.builder import create_runner
from metaseg_ros.inference.export import plan_tensorrt_build, tensorrt_compile_options
from metaseg_ros.inference.runner import BackendUnavailableError, RunnerOptions
from metaseg_ros.inference.runners.tensorrt import import_torch_tensorrt
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.export import INPUT_NAMES

SIZE = (128, 128)


def tensorrt_usable() -> bool:
    try:
        import_torch_tensorrt("cuda")
    except BackendUnavailableError:
        return False
    return True


@pytest.fixture(scope="module")
def model() -> MetaSegmenter:
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=SIZE, num_queries=20,
                                     num_decoder_layers=3, pixel_decoder={"encoder_layers": 1}))
    with torch.no_grad():
        for index, layer in enumerate(model.transformer_decoder.layers):
            layer.memory_attn.gate.fill_(0.3 + 0.1 * index)
    return model.eval()


@pytest.fixture(scope="module")
def plan(model):
    return plan_tensorrt_build(model, device="cpu")


def test_plan_exports_a_float16_program_with_fixed_float_inputs(plan, model):
    config = model.config
    h_mem, w_mem = config.memory_size
    expected = [((1, 3, *SIZE), torch.float32),
                ((1, 4, config.memory.feature_dim, h_mem, w_mem), torch.float16),
                ((1, 4, config.num_queries, config.hidden_dim), torch.float16),
                ((1, 4), torch.float32),
                ((1, 1, 1, 1), torch.float16)]  # the kept mask features' placeholder
    assert [(tuple(t.shape), t.dtype) for t in plan.inputs] == expected
    placeholders = {node.name: node.meta["val"] for node in plan.program.graph.nodes
                    if node.op == "placeholder" and node.name in INPUT_NAMES}
    assert [(tuple(placeholders[n].shape), placeholders[n].dtype) for n in INPUT_NAMES] == expected
    assert {p.dtype for p in plan.program.state_dict.values() if p.is_floating_point()} == \
        {torch.float16}
    assert plan.settings.precision == "float16" and plan.settings.sampling == "gather"
    # The caller's model is left as it was.
    assert next(model.parameters()).dtype == torch.float32


def test_plan_holds_no_grid_sample_or_data_dependent_ops(plan):
    """grid_sample decompositions have been reported to compile wrongly in TensorRT; nonzero
    and boolean indexing have data-dependent shapes."""
    targets = {str(node.target) for node in plan.program.graph.nodes
               if node.op == "call_function"}
    banned = [t for t in targets if any(word in t for word in
                                        ("grid_sampler", "nonzero", "masked_select",
                                         "index_put", "einsum"))]
    assert banned == []
    assert "aten.index_select.default" in targets  # the gather-based sampling


def test_plan_program_runs_close_to_float32_eager(plan, model):
    """What the engine is built from computes the float32 model's results in float16."""
    module = plan.program.module()
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * 255
    memory_half = plan.inputs[1:]
    memory = model.initial_memory(1)
    with torch.no_grad():
        for _ in range(3):  # memory fed back, each side its own
            half = module(images, *memory_half)
            full = model(images, memory)
            memory_half, memory = half[3:], full.memory
            assert half[0].dtype == torch.float16 and half[5].dtype == torch.float32
            probabilities = half[0].float().softmax(-1)
            assert (probabilities - full.class_logits.softmax(-1)).abs().max() < 2e-2
            a, b = half[1].float() > 0, full.mask_logits > 0
            assert (a & b).sum() / (a | b).sum() >= 0.97
    assert memory_half[2].tolist() == [[1.0, 1.0, 1.0, 0.0]]


def _compile_2_3(exported_program, inputs: Sequence, *, device=None,
                 enabled_precisions=(torch.float32,), truncate_long_and_double=False,
                 require_full_compilation=False, min_block_size=5):
    """Signature of torch_tensorrt.dynamo.compile in Torch-TensorRT 2.3 (documented)."""


def _compile_2_10(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None,
                  device=None, use_explicit_typing=True, enable_autocast=False,
                  enabled_precisions=None, truncate_double=False,
                  require_full_compilation=False, min_block_size=5):
    """Signature of torch_tensorrt.dynamo.compile in recent releases (documented)."""


def test_compile_options_follow_the_installed_api(plan):
    recent = tensorrt_compile_options(_compile_2_10, plan.inputs)
    assert recent["arg_inputs"] == list(plan.inputs) and "inputs" not in recent
    assert recent["use_explicit_typing"] is True and "enabled_precisions" not in recent
    assert recent["truncate_double"] is True and recent["min_block_size"] == 1
    old = tensorrt_compile_options(_compile_2_3, plan.inputs)
    assert old["inputs"] == list(plan.inputs) and "arg_inputs" not in old
    assert old["enabled_precisions"] == {torch.float16, torch.float32}
    assert "truncate_double" not in old and old["require_full_compilation"] is False


def test_fingerprint_separates_tensorrt_builds(model, plan):
    assert artifact_fingerprint(model, plan.settings) != artifact_fingerprint(
        model, ExportSettings("pt2"))


@pytest.mark.skipif(tensorrt_usable(), reason="TensorRT is usable here")
def test_missing_torch_tensorrt_or_cuda_is_one_clear_error_before_any_export(model, tmp_path):
    with pytest.raises(BackendUnavailableError) as error:
        create_runner(model, "tensorrt", "cuda", options=RunnerOptions(cache_dir=tmp_path))
    message = str(error.value)
    assert message.startswith("backend 'tensorrt' is unavailable:")
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:
        assert "torch_tensorrt cannot be imported" in message
    if not torch.cuda.is_available():
        assert "sees no CUDA device" in message
    assert "onnxruntime" in message  # what to use instead
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_on_cpu_is_refused(model, tmp_path):
    with pytest.raises(BackendUnavailableError, match="device 'cuda' only"):
        create_runner(model, "tensorrt", "cpu", options=RunnerOptions(cache_dir=tmp_path))


def test_unusable_torch_tensorrt_is_reported_with_its_cause(tmp_path, monkeypatch):
    """Without libnvinfer, `import torch_tensorrt` raises a plain Exception: a stand-in
    package that fails the same way must produce the backend error, not a crash."""
    package = tmp_path / "torch_tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise Exception("Libnvinfer could not be loaded: libnvinfer.so.10: cannot open '
        'shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    with pytest.raises(BackendUnavailableError, match=r"libnvinfer\.so\.10") as error:
        import_torch_tensorrt("cuda")
    assert "Exception: Libnvinfer could not be loaded" in str(error.value)
