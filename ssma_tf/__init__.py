"""ssma_tf: multimodal and semi-supervised semantic segmentation in TF 2 / Keras 3."""

__version__ = "0.1.0"


def __getattr__(name):
    """`ssma_tf.Segmenter` (ssma_tf.api) is imported on first use, so that importing the
    package stays cheap (no TensorFlow)."""
    if name == "Segmenter":
        from ssma_tf.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'ssma_tf' has no attribute {name!r}")
