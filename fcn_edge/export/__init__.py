"""Export: checkpoint → verified, self-describing artifacts (issue "Export").

* ``exporter.export(ExportConfig(...))`` — ``fcn-edge export``: ONNX fp32 (``onnx_export``,
  ``graph``), FP16 (``fp16``, run in fp16 by ``execute``) and INT8 (``int8``), each held to
  PyTorch by ``parity`` and described by ``artifact_meta`` (schema: ``runtime.metadata``).
* ``tensorrt.build_engine`` — ``fcn-edge build``: TensorRT engines (``engine_file`` format).
* ``triton.write_triton_repo`` — a Triton Inference Server model repository.

Importing this package imports nothing: ``engine_file`` is plain Python, so the runtime reads
engine headers without torch; the other modules import torch/onnx when used.
"""
