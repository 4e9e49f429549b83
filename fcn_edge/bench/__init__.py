"""``fcn-edge bench``: every artifact held to the PyTorch fp32 reference, in accuracy and speed.

* :mod:`.accuracy` — evaluation sets, mean IU, ΔmIoU and label agreement, the regression bounds.
* :mod:`.timing` — fair latency measurement (warm-up, medians, interleaved ratios), sgemm ceiling.
* :mod:`.compare` — the models one run times: the model, and a ``--baseline`` through the same
  rows.
* :mod:`.profile` — ONNX Runtime's profiler per op type and node, with achieved GFLOP/s.
"""
