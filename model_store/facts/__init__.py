"""Architecture facts: model families, checkpoints, diffusers pipelines, the Hub, the lock file."""
