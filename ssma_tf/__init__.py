"""ssma_tf: multimodal and semi-supervised semantic segmentation in TF 2 / Keras 3."""

__version__ = "0.1.0"
