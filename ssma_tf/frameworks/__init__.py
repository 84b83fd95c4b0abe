"""ssma_tf.frameworks."""
