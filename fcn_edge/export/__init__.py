"""Export: checkpoint → verified, self-describing artifacts (issue "Export").

* ``exporter.export(ExportConfig(...))`` — ``fcn-edge export``: ONNX fp32 (``onnx_export``,
  ``graph``), FP16 (``fp16``, run in fp16 by ``execute``) and INT8 (``int8``), each held to
  PyTorch by ``parity`` and described by ``artifact_meta`` (schema: ``runtime.metadata``).
* ``tensorrt.build_engine`` — ``fcn-edge build``: TensorRT engines (``engine_file`` format).
* ``triton.write_triton_repo`` — a Triton Inference Server model repository.
* ``trt_compat`` — will an ONNX build with TensorRT 8.6 / 10 / 11? Its rules (``trt_rules``,
  on the graph as ``trt_graph`` reads it) and tables (``trt_support``) need no TensorRT; export
  and build run it, ``fcn-edge build --check-only`` on its own.

Importing this package imports nothing: ``engine_file`` is plain Python, so the runtime reads
engine headers without torch; the other modules import torch/onnx when used.
"""
