"""VIKDF model factory: the model, its training stages, conversion of official checkpoints and the ONNX
bundle export that @vikdf/core runs."""

__version__ = "0.1.0"
