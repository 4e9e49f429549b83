"""Export: checkpoint → verified, self-describing artifacts (issue "Export").

* ``exporter.export(ExportConfig(...))`` — ``fcn-edge export``: ONNX fp32 (``onnx_export``,
  ``graph``), FP16 (``fp16``, run in fp16 by ``execute``) and INT8 (``int8``), each held to
  PyTorch by ``parity`` and described by ``artifact_meta`` (schema: ``runtime.metadata``).
* ``tensorrt.build_engine`` — ``fcn-edge build``: TensorRT engines (fp32, fp16, int8 from Q/DQ,
  on a Jetson DLA core), decided by ``trt_options`` (typing per release, INT8, DLA, profile,
  cache key), verified by the accuracy gate ``trt_gate`` (the engine against ONNX Runtime on
  the same ONNX, torch-free, with the frames of ``frames``) before they are written in the
  runtime's engine file format (``runtime.engine_file``). ``fp16_keep`` reads ``--keep-fp32``.
* ``triton.write_triton_repo`` — a Triton Inference Server model repository.
* ``trt_compat`` — will an ONNX build with TensorRT 8.6 / 10 / 11? Its rules (``trt_rules``,
  on the graph as ``trt_graph`` reads it) and tables (``trt_support``) need no TensorRT; export
  and build run it, ``fcn-edge build --check-only`` on its own.

* ``checkpoint_loader`` — registers how the runtime's torch backend opens a checkpoint (the
  runtime never imports this package; it imports that module by name, lazily).
* ``onnx_props`` — an in-memory ONNX model's metadata; ``runners`` — ONNX Runtime sessions on
  models not yet written, for parity and latency.

Everything a deployed box needs to read and run an artifact lives in ``fcn_edge.runtime``
(engine file format, ONNX metadata reader, GPU query); export imports it, never the other way.
Importing this package imports nothing; its modules import torch/onnx when used.
"""
