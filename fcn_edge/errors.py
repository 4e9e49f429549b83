"""The exception hierarchy shared by every part of fcn-edge.

The CLI turns any :class:`FcnEdgeError` into one line on stderr and a non-zero exit code,
so messages say what was wrong *and* what to do about it.
"""
from __future__ import annotations

import signal


class FcnEdgeError(Exception):
    """Base class of every error fcn-edge raises on purpose."""


class InputError(FcnEdgeError, ValueError):
    """An argument, array or file given by the user is not what it must be."""


class ModelFormatError(FcnEdgeError, ValueError):
    """A model, checkpoint or weights file cannot be read or does not fit the model."""


class WeightsMismatchError(ModelFormatError):
    """A weights file's tensors do not match the model; the message lists the keys."""

    def __init__(self, message: str, missing=(), unexpected=(), mis_shaped=()) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mis_shaped = list(mis_shaped)


class AccuracyGateFailed(ModelFormatError):
    """A built TensorRT engine's outputs left its precision's bounds against ONNX Runtime on
    the same ONNX (NaN, Inf or labels); it was neither cached nor written."""


class BackendUnavailable(FcnEdgeError, ImportError):
    """An optional engine (torch, tensorrt, onnxruntime-gpu, ...) is not installed or usable."""


class TrainingDiverged(FcnEdgeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (``timeout``, systemd, Docker, Kubernetes, a closed terminal).

    A KeyboardInterrupt, so that every path that finishes cleanly on Ctrl-C — a playable video,
    an atomic checkpoint — finishes the same way on these; ``signum`` is the signal, the exit
    code is ``128 + signum`` as a shell reports it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
