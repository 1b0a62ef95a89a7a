"""int8 matrix products for ONNX Runtime on the CPU: the opt-in `precision: int8`.

The float32 ONNX export of the step is rewritten by ONNX Runtime's dynamic quantisation:
every MatMul and Gemm whose second input is a constant weight (the linear layers of the
transformer decoder, the memory and the pixel decoder's encoder) stores that weight as int8
with one scale, and quantises its activations per call (DynamicQuantizeLinear +
MatMulInteger). Attention's products of two activations stay float32 (MatMulConstBOnly),
and so do convolutions: ONNX Runtime's ConvInteger runs slower on the CPU than its float
Conv, so quantising the backbone makes the step slower, not faster.

Outputs differ from float32 (about 1e-2 relative): never a default, and `auto` does not
compare it with eager. Its accuracy and speed: scripts/bench_int8.py, docs/benchmarks.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from metaseg_ros.inference.runner import BackendUnavailableError

QUANTIZED_OPERATORS = ("MatMul", "Gemm")


def quantize_onnx(source: str | Path, destination: str | Path) -> Path:
    """Write `source` (a float32 ONNX step) to `destination` with int8 matrix products.

    The model's metadata (the artifact description) is kept.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise BackendUnavailableError(
            f"precision 'int8' needs onnxruntime's quantisation tools ({error})") from error
    # The quantiser advises its pre-processing through the root logger on every call; the
    # export is already shape-inferred and constant-folded, so the advice is noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(Path(source), Path(destination),
                         op_types_to_quantize=list(QUANTIZED_OPERATORS),
                         weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    return Path(destination)
