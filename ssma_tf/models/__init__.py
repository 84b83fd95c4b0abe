"""ssma_tf.models."""
