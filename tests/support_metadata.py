"""Artifact metadata as fcn-edge wrote it, for the schema tests (``from support_metadata import
OLD_PROPS``): plain data, no imports."""

#: ``metadata_props`` exactly as fcn-edge wrote them before inputs and heads were typed
#: (format 1): an RGB-D, two-head argmax artifact.
OLD_PROPS = {
    "format": "fcn-edge/onnx", "format_version": "1", "model": "fcn16s", "backbone": "resnet18",
    "num_classes": "3", "classes": '["sky", "ground", "thing"]',
    "palette": "[[0, 0, 0], [128, 0, 0], [0, 128, 0]]", "mean": "[0.485, 0.456, 0.406]",
    "std": "[0.229, 0.224, 0.225]", "color_order": "rgb", "output_stride": "8",
    "size_multiple": "1", "raw_io": "false", "argmax": "true", "precision": "fp32",
    "labels_dtype": "uint8",
    "shapes": '{"min": [1, 32, 32], "opt": [1, 48, 48], "max": [1, 64, 64]}',
    "ignore_index": "255", "model_options": "{}", "source_sha256": "", "fcn_edge_version": "",
    "export_options": "{}", "parity": "{}", "dataset": "{}", "metrics": "{}",
    "inputs": '[{"name": "images", "modality": "rgb", "channels": 3, "layout": "NCHW", '
              '"dtype": "float32", "encoding": "(pixel / 255 - mean) / std, colour order '
              'color_order"}, {"name": "depth", "modality": "depth", "channels": 1, '
              '"layout": "NCHW", "dtype": "float32", "encoding": {"mean_m": 2.8, '
              '"std_m": 1.4, "invalid": 0.0}}]',
    "heads": '[{"task": "semantic", "output": "labels_semantic", "num_classes": 3, '
             '"classes": ["sky", "ground", "thing"], "palette": [[0, 0, 0], [128, 0, 0], '
             '[0, 128, 0]], "labels_dtype": "uint8", "metrics": {"mean_iou": 0.6}}, '
             '{"task": "geometric", "output": "labels_geometric", "num_classes": 2, '
             '"classes": ["horizontal", "vertical"], "palette": [[0, 0, 0], [200, 0, 0]], '
             '"labels_dtype": "int32", "metrics": {}}]',
}
