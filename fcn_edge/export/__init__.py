"""ONNX export, FP16/INT8 graphs, the TensorRT builder and artifact metadata (issue "Export").
Not implemented yet: this package exists so the layout is fixed."""
