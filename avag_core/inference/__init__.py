"""Running a trained AVAGFormer: the predictor, the backends that run it (PyTorch, ONNX Runtime, OpenVINO), the
ONNX export and its INT8 quantization. Empty on purpose: each module is imported by name, so that importing one
light module does not load torch, onnx or a runtime."""
