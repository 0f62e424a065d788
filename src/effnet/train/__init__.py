"""Training with the paper's recipe (P5 §5.2 and the official TPU code, paper.md §1.7)."""
