"""The model Triton's Python backend runs for an fcn-edge repository (``model.py`` imports it).

Triton calls ``initialize`` once per instance, ``execute`` with the requests its dynamic
batcher gathered, and ``finalize`` at unload. ``execute`` decodes every request
(:func:`~fcn_edge.serve.protocol.decode_request`), runs all their frames through one
``Segmenter.batch`` (frames of one size run as one batch), and answers each request with its
own labels. A request that cannot be decoded gets its own error response, and the rest of
the batch is answered as if it had not been there; a failure of the engine itself fails the
requests of that call only. Either way the model keeps serving.

``triton_python_backend_utils`` exists only inside Triton's Python backend stub; it is
imported there, at ``initialize``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FcnEdgeError, InputError
from .protocol import Limits, decode_request, input_specs, output_specs, response_arrays
from .repository import ARTIFACT_KEY, BACKEND_KEY, MAX_SIDE_KEY, THREADS_KEY


class TritonPythonModel:
    """Triton's Python-backend entry points around one :class:`~fcn_edge.runtime.Segmenter`."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        from ..runtime import Segmenter

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = int(params.get(THREADS_KEY, "0"))
        options = {"threads": threads} if threads else {}
        self._segmenter = Segmenter(folder / params[ARTIFACT_KEY],
                                    params.get(BACKEND_KEY, "auto"), **options)
        self._meta = self._segmenter.meta
        self._inputs = [s.name for s in input_specs(self._meta)]
        self._outputs = [s.name for s in output_specs(self._meta)]
        self._limits = Limits(max_side=int(params.get(MAX_SIDE_KEY, Limits.max_side)))

    def execute(self, requests: list[Any]) -> list[Any]:
        decoded: list[Any] = []
        for request in requests:
            try:
                decoded.append(decode_request(self._arrays(request), _parameters(request),
                                              self._meta, self._limits))
            except InputError as exc:
                decoded.append(exc)
        good = [d for d in decoded if not isinstance(d, Exception)]
        try:
            results = iter(self._segment(good))
        except Exception as exc:  # noqa: BLE001 -- the engine failed: this call's requests only
            failure = exc if isinstance(exc, FcnEdgeError) else FcnEdgeError(
                f"inference failed: {type(exc).__name__}: {exc}")
            return [self._error(d if isinstance(d, Exception) else failure) for d in decoded]
        return [self._error(d) if isinstance(d, Exception) else self._answer(next(results))
                for d in decoded]

    def finalize(self) -> None:
        self._segmenter.close()

    # --- the steps ---------------------------------------------------------------------------
    def _arrays(self, request: Any) -> dict[str, Any]:
        arrays = {}
        for name in self._inputs:
            tensor = self._pb.get_input_tensor_by_name(request, name)
            arrays[name] = None if tensor is None else tensor.as_numpy()
        return arrays

    def _segment(self, requests: list[Any]) -> list[list[Any]]:
        """Every request's frames in one ``Segmenter.batch``; the results split back."""
        frames = [f for d in requests for f in d.frames]
        if not frames:
            return []
        extras = {m: [a for d in requests for a in d.extras[m]] for m in requests[0].extras}
        labels = self._segmenter.batch(frames, **extras)
        out, start = [], 0
        for d in requests:
            out.append(labels[start:start + len(d.frames)])
            start += len(d.frames)
        return out

    def _answer(self, results: list[Any]) -> Any:
        arrays = response_arrays(results, self._meta)
        tensors = [self._pb.Tensor(name, arrays[name]) for name in self._outputs]
        return self._pb.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        """The request's own error: INVALID_ARG (HTTP 400) for a request that cannot be
        served, INTERNAL (500) for a failure here (Tritons before 23.08 know only INTERNAL)."""
        error = self._pb.TritonError
        code = getattr(error, "INVALID_ARG" if isinstance(exc, InputError) else "INTERNAL", None)
        made = error(str(exc)) if code is None else error(str(exc), code)
        return self._pb.InferenceResponse(output_tensors=[], error=made)


def _parameters(request: Any) -> dict[str, Any]:
    """The request's parameters (Triton hands them over as a JSON text)."""
    text = request.parameters() if hasattr(request, "parameters") else "{}"
    try:
        params = json.loads(text or "{}")
    except ValueError:
        raise InputError("the request's parameters are not JSON") from None
    return params if isinstance(params, dict) else {}
