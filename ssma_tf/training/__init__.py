"""ssma_tf.training."""
