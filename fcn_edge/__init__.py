"""fcn-edge: Fully Convolutional Networks (Long, Shelhamer & Darrell, 2015) from training to the edge.

This module imports nothing heavy: ``import fcn_edge`` must stay cheap on an edge box, and
``import fcn_edge.runtime`` must never pull in torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
