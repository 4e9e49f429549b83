"""Training loop, losses, checkpoints and distributed training (issue "Training").
Not implemented yet; checkpoints are already written by ``fcn_edge.models.save_checkpoint``."""
