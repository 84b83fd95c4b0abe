"""ssma_tf.data."""
