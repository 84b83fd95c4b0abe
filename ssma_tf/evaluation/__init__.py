"""ssma_tf.evaluation."""
