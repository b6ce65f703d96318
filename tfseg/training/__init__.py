"""The generic trainer: strategy, XLA-compiled per-replica gradients, checkpoints, summaries."""
