"""Baseline architectures as data (no torch): EfficientNet-B0 and Lite, MobileNetV1/V2, ResNet."""
