"""Training with the paper's recipe (P5 §5.2 and the official TPU code; docs/paper.md)."""
