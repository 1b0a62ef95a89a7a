#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one script (CI has no GPU):
#   1. what the machine offers (GPU, torch/CUDA, ONNX Runtime providers, Torch-TensorRT)
#   2. test/test_cuda.py and test/test_inference_tensorrt.py (CUDA against the CPU)
#   3. scripts/bench_inference.py on CUDA: eager, cudagraph and compiled (torch.compile),
#      float32/float16/bfloat16
#   4. scripts/bench_model.py --reference on CUDA: ours against transformers' Mask2Former
#   5. (section train) the one-run memory recipe on CUDA for 60 steps: seconds per step
# Logs and JSON go to $OUT (default ./gpu_check_out). Python packages the machine lacks can
# be given as wheels in .whl/ (installed into a private target, nothing else touched).
#
#   scripts/gpu_check.sh                    # everything, ~5 min on an H100/H200
#   scripts/gpu_check.sh tests bench        # only these sections (tests bench reference train)
set -u
SECTIONS=" ${*:-tests bench reference} "
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 METASEG_CACHE_DIR=/tmp/metaseg_cache
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/metaseg_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/metaseg_site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" - <<'EOF'
import importlib
import torch
print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn "
      f"{torch.backends.cudnn.version()} device {torch.cuda.get_device_name()}")
import onnxruntime
print(f"onnxruntime {onnxruntime.__version__} providers {onnxruntime.get_available_providers()}")
for name in ("torch_tensorrt", "tensorrt"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError as error:
        print(f"{name}: not importable ({error})")
EOF

if [[ $SECTIONS == *" tests "* ]]; then
  echo "== tests"
  timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -rs test/test_cuda.py \
    test/test_inference_tensorrt.py 2>&1 | tee "$OUT/pytest.log" | tail -25
fi
if [[ $SECTIONS == *" bench "* ]]; then
  echo "== bench_inference (CUDA)"
  timeout 300 "$PYTHON" scripts/bench_inference.py --device cuda --configs tiny r50 \
    --sizes 512 --backends eager cudagraph compiled --precisions float32 float16 bfloat16 \
    --frames 30 --warmup 5 --threads 4 --json "$OUT/bench_inference_cuda.json" 2>&1 \
    | tee "$OUT/bench_inference.log"
fi
if [[ $SECTIONS == *" reference "* ]]; then
  echo "== bench_model --reference (CUDA)"
  timeout 150 "$PYTHON" scripts/bench_model.py --device cuda --configs r50 --sizes 512 \
    --sampling grid_sample --reference --repeats 30 --warmup 5 \
    --json "$OUT/bench_model_cuda.json" 2>&1 | tee "$OUT/bench_model.log"
fi
if [[ $SECTIONS == *" train "* ]]; then
  echo "== training throughput (CUDA), issue 14's one-run memory recipe, 60 steps"
  timeout 400 "$PYTHON" -m metaseg_ros.cli.train \
    --config metaseg_ros/train/configs/tiny_synthetic_cpu_memory_scene.yaml \
    --set device=cuda --set optim.max_steps=60 --set output_dir="$OUT/train" 2>&1 \
    | tee "$OUT/train.log" | grep -E "^step|final"
fi
