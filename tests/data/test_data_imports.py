"""fcn_edge.data runs on edge boxes: it must import without torch (and scipy stays lazy)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_imports_neither_torch_nor_scipy():
    code = ("import sys, fcn_edge.data as d; d.open_dataset('synthetic', num_images=1)[0]; "
            "print('torch' in sys.modules, 'scipy' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "True"]  # the check can fail: cv2 *is* imported
