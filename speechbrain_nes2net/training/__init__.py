"""Training: the Brain, recipe plumbing, data pipelines, losses, RawBoost, checkpoints, feature cache."""
