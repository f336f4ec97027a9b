"""Training: optimisers, the loop, checkpoints."""
