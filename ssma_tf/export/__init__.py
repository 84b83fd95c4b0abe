"""ssma_tf.export."""
