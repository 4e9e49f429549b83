"""Serving fcn-edge artifacts to many clients through NVIDIA Triton Inference Server.

* :mod:`~fcn_edge.serve.protocol` — what a client sends and gets back (plain numpy);
* :mod:`~fcn_edge.serve.repository` — a Triton model folder whose Python-backend ``model.py``
  runs any artifact through fcn-edge's runtime (``ServeModel`` says how it is served);
* :mod:`~fcn_edge.serve.python_model` — that ``model.py``'s class, run by Triton's Python
  backend in any Triton;
* :mod:`~fcn_edge.serve.server` — ``fcn-edge serve``: the tritonserver PyTriton bundles,
  started on such a repository.

A layer above the runtime (it imports only the runtime and the shared leaves) and never torch:
a server that runs ONNX or TensorRT artifacts installs ``fcn-edge[serve]`` without training.
"""
