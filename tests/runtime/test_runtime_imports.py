"""The runtime must import on an edge box without PyTorch (STYLE.md: dependencies point one way)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["fcn_edge", "fcn_edge.runtime", "fcn_edge.metrics",
                                    "fcn_edge.cli", "fcn_edge.checks", "fcn_edge.config",
                                    "fcn_edge.io"])
def test_light_modules_do_not_import_torch(module):
    loaded = _modules_after_import(module)
    assert module in loaded
    assert "torch" not in loaded, f"importing {module} imported torch"


def test_models_do_import_torch():
    # The check above can fail: importing the models really does bring torch in.
    assert "torch" in _modules_after_import("fcn_edge.models")
