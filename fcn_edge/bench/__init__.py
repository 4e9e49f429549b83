"""``fcn-edge bench``: every artifact held to the PyTorch fp32 reference, in accuracy and speed.

* :mod:`.accuracy` — evaluation sets, mean IU, ΔmIoU and label agreement, the regression bounds.
* :mod:`.timing` — fair latency measurement (warm-up, medians, interleaved ratios), sgemm ceiling.
"""
