"""``fcn-edge demo``: procedural data → train → evaluate → export → bench → run → report.

    from fcn_edge.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(out_dir="runs/demo"))  # or minutes=10: a budget
    print(result.report)           # runs/demo/report.md
"""
from .pipeline import STAGE_NAMES, STAGES, DemoResult, run_demo
from .state import DemoConfig, DemoState

__all__ = ["STAGES", "STAGE_NAMES", "DemoConfig", "DemoState", "DemoResult", "run_demo"]
