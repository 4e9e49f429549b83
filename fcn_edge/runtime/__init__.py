"""The light runtime (issue "Runtime"): ``Segmenter``, backends, pre/post-processing, sources.

It depends only on numpy, OpenCV and the inference engines: importing it must never import
torch (a test asserts this), so an edge box can run exported models without PyTorch.
Not implemented yet: this package exists so the layout and that rule are fixed.
"""
