"""``fcn-edge bench`` on the paper's §5 nets: refused with a pointer to what measures them."""
from __future__ import annotations

import pytest

from fcn_edge.bench.runner import BenchConfig, bench
from fcn_edge.errors import InputError
from fcn_edge.models import create_model, save_checkpoint


@pytest.mark.parametrize("options", [{"heads": {"semantic": 8, "geometric": 3}},
                                     {"num_classes": 8, "in_channels": 4}])
def test_bench_refuses_multi_input_and_multi_head_models(tmp_path, options):
    model = create_model("fcn32s", backbone="resnet18", **options)
    path = save_checkpoint(model, tmp_path / "m.pt", {})
    with pytest.raises(InputError, match="bench_multitask.py"):
        bench(BenchConfig(str(path), out_dir=str(tmp_path / "bench")), log=lambda line: None)
    assert not (tmp_path / "bench" / "artifacts").exists() or not any(
        (tmp_path / "bench" / "artifacts").iterdir())
