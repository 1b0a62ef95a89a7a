"""Training: matching, losses, the training loop."""
