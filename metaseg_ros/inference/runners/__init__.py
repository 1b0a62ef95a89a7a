"""The runner families, one module each: eager.py (eager PyTorch and its CUDA graph),
onnxruntime.py, program.py (torch.export programs) and tensorrt.py (Torch-TensorRT).
Each implements metaseg_ros.inference.runner.ModelRunner."""
