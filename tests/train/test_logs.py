"""The training progress bar (tqdm): in place on a terminal, a line every tenth of the epoch
in a log file."""
from __future__ import annotations

import io

from fcn_edge.train.logs import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, total: int = 20) -> str:
    bar = Progress(3, 10, total, stream=stream)
    for step in range(1, total + 1):
        bar.update(step, loss=1.0 / step, images=4 * step)
    bar.close()
    return stream.getvalue()


def test_a_log_file_gets_one_readable_line_per_tenth_of_the_epoch():
    lines = _run(io.StringIO()).splitlines()
    assert len(lines) == 10 and "\r" not in "".join(lines)
    assert all(line.startswith("epoch 3/10:") and "img/s" in line for line in lines)
    assert " 2/20 " in lines[0] and " 20/20 " in lines[-1] and "loss 0.0500" in lines[-1]
    assert "100%|##########|" in lines[-1]


def test_a_terminal_gets_one_bar_redrawn_in_place():
    text = _run(_Terminal())
    assert "\r" in text and text.endswith("\n") and text.count("\n") == 1
    assert "epoch 3/10:" in text and "20/20" in text.rsplit("\r", 1)[-1]
    assert "loss 0.0500" in text.rsplit("\r", 1)[-1]
