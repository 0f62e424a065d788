"""Speed and deployment: BN folding, ONNX/``.pt2`` export, effnet's ONNX Runtime engine (SE plans,
split batches), int8 quantisation, ``optimize_for_inference``, the benchmarks against the peers,
the training-memory estimate and the hardware-measured budget fits (latency, memory).

This package never imports :mod:`effnet.search` (the import-linter contract in pyproject.toml).
"""
