"""Arguments a hostile caller gives a Segmenter: raw buffers with shapes numpy would take or
twist, batches that are no sequence, thread counts that never return. Each is one InputError
line, raised before any work."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_edge.errors import InputError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import open_backend
from fcn_edge.runtime.backends.base import max_threads


@pytest.fixture(scope="module")
def seg(onnx_artifact):
    with Segmenter(onnx_artifact("rawio_argmax"), threads=1) as opened:
        yield opened


BAD_SHAPES = [(-24, -40, 3), (24, -40, -3), (24.5, 40, 3), ("24", 40, 3), (True, 40, 3),
              (0, 40, 3), (24, 40, 3, 1), (24,), 5, "24x40", {"h": 24},
              (2 ** 40, 2 ** 40, 3), (1e20, 1, 3)]


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=repr)
def test_bad_buffer_shapes_are_one_line_input_errors(seg, scene, shape):
    """``seg(buf, shape=(-64, -96, 3))`` gave numpy's "can only specify one unknown
    dimension"; 24.5 was truncated to 24 and a 2**40 side overflowed into a "match"."""
    data = scene(24, 40).tobytes()
    with pytest.raises(InputError) as caught:
        seg(data, shape=shape)
    message = str(caught.value)
    assert "\n" not in message and ("shape" in message), message


def test_a_batch_that_is_no_sequence_and_a_text_alpha_are_input_errors(seg):
    with pytest.raises(InputError, match="batch takes"):
        seg.batch(5)
    with pytest.raises(InputError, match="alpha must be a number from 0 to 1"):
        seg.overlay(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8), alpha="half")


@pytest.mark.parametrize("threads", [100_000, -2, 2.5, "4", True])
@pytest.mark.parametrize("backend", ["onnxruntime:cpu", "torch:cpu"])
def test_thread_counts_are_bounded_before_any_engine_starts(onnx_artifact, checkpoint, backend,
                                                            threads):
    """``Segmenter(threads=100000)`` hung with memory growing ~32 MB/s (and starved the whole
    machine of threads: do not run this case against code without the bound)."""
    model = onnx_artifact("plain") if backend.startswith("onnx") else checkpoint
    pattern = rf"threads must be an integer from 0 to {max_threads()} .*got {threads!r}"
    with pytest.raises(InputError, match=pattern):
        Segmenter(model, backend, threads=threads)
    with pytest.raises(InputError, match=pattern):  # the backends alone refuse it too
        open_backend(model, backend, threads=threads)
