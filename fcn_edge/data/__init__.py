"""Datasets and transforms (issue "Training"): procedural scenes, PASCAL VOC/SBD, Cityscapes,
image–mask folders. Not implemented yet: this package exists so the layout is fixed."""
