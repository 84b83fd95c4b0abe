"""TensorBoard: scalars (loss terms, learning rate) and coloured label / prediction images.

Written with tf.summary.write and the TensorBoard plugin metadata, so the tensorboard
package is only needed to view them, not to train.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ssma_tf.evaluation.evaluator import main_logits
from ssma_tf.visualization import colorize, dataset_palette, display_image


def _metadata(plugin):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    ).SerializeToString()


SCALAR_METADATA = _metadata("scalars")
IMAGE_METADATA = _metadata("images")


def write_scalar(tag, value, step):
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=SCALAR_METADATA)


def write_images(tag, images, step):
    """uint8 [N, H, W, 3] as TensorBoard's image format: [width, height, png...]."""
    height, width = images.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + encoded)
    tf.summary.write(tag, tensor, step=step, metadata=IMAGE_METADATA)


class Summaries:
    """Writes to `folder` (chief) or nowhere (folder None)."""

    def __init__(self, folder, config, specs=None):
        self.writer = (tf.summary.create_file_writer(folder) if folder
                       else tf.summary.create_noop_writer())
        self.config = config
        self.specs = specs
        self.palette = dataset_palette(config.dataset, config.num_classes)

    def scalars(self, step, values):
        with self.writer.as_default(step=step):
            for key, value in values.items():
                write_scalar(key, value, step)

    def images(self, step, model, inputs, labels):
        """Input | ground truth | prediction, side by side, one row per sample."""
        logits = main_logits(model(inputs, training=False))
        prediction = np.argmax(np.asarray(logits), axis=-1)
        labels = np.asarray(labels)
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        rows = []
        for i in range(len(labels)):
            image = display_image({k: v[i] for k, v in arrays.items()}, self.specs)
            rows.append(np.concatenate([
                image, colorize(labels[i], self.palette, self.config.ignore_label),
                colorize(prediction[i], self.palette, self.config.ignore_label)], axis=1))
        with self.writer.as_default(step=step):
            write_images("input_label_prediction", np.stack(rows), step)

    def flush(self):
        self.writer.flush()
