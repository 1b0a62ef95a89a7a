"""Running the model: pre/post-processing, backends (eager, ONNX Runtime, TensorRT), export."""
