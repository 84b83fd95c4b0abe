"""Convert an SSMA list file to TFRecords (+ a JSON sidecar describing them).

    python convert_to_tfrecords.py --file train.txt --record train.tfrecords
    python convert_to_tfrecords.py -f train.txt -r out/train.tfrecords --modalities rgb,depth,hha \
        --encodings depth=raw,hha=hha --intrinsics 518.9,519.5,325.6,253.7 --num-shards 8
    python convert_to_tfrecords.py -f train.txt -r train.tfrecords --image-format raw  # fast decode
"""

import shlex
import sys

from absl import app, flags, logging

from ssma_tf.cli import guarded, without_debug

flags.DEFINE_string("file", None, "List file: one sample per line, `mod1 mod2 ... label`.",
                    short_name="f")
flags.DEFINE_string("record", None, "Output record path (shards get -0000i-of-0000N.tfrecord).",
                    short_name="r")
flags.DEFINE_list("modalities", ["rgb", "depth"],
                  "Modality names of the list columns (label last).")
flags.DEFINE_bool("unlabeled", False, "The list has no label column.")
flags.DEFINE_string("encodings", "", "Per modality encoding, e.g. depth=raw,hha=hha "
                    "(color|image|raw|jet|hha; defaults rgb=color, depth=raw, others=image).")
flags.DEFINE_float("depth_scale", 0.001, "Metres per stored depth unit.")
flags.DEFINE_string("intrinsics", None, "Camera intrinsics fx,fy,cx,cy in pixels (needed for hha).")
flags.DEFINE_bool("fill_holes", False, "Fill depth holes (ip_basic-style) before encoding.")
flags.DEFINE_float("jet_max_depth", None, "Depth (m) mapped to the top of the jet colormap "
                   "(default: each image's maximum).")
flags.DEFINE_integer("num_classes", None, "Reject label ids >= this (except --ignore-label).")
flags.DEFINE_integer("ignore_label", 255, "Label id excluded from loss and metrics.")
flags.DEFINE_string("label_map", None, "Raw id -> train id: a dataset name from "
                    "ssma_tf.datasets.registry or a JSON file {\"raw\": train}.")
flags.DEFINE_integer("num_shards", 1, "Number of output shards.", lower_bound=1)
flags.DEFINE_enum("image_format", "png", ["png", "raw"], "Pixel storage in the records: png "
                  "(compact) or raw (uncompressed, ~3x larger, fastest to decode when training).")
flags.DEFINE_integer("workers", None, "Worker processes (default: CPU count).", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Allow an output path that is an input (list or image).")
flags.DEFINE_bool("allow_8bit_depth", False, "Accept 8-bit or JPEG images in raw-depth columns "
                  "(normally refused: their values are not depth units).")
flags.mark_flags_as_required(["file", "record"])
FLAGS = flags.FLAGS


def _dashes_to_underscores(argv):
    """Accept --depth-scale as well as --depth_scale."""
    fixed = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        fixed.append(arg)
    return fixed


@guarded
def main(argv):
    from ssma_tf.data.convert import convert
    from ssma_tf.errors import InputError

    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {argv[1:]}")
    convert(FLAGS.file, FLAGS.record, modalities=FLAGS.modalities, unlabeled=FLAGS.unlabeled,
            encodings_by_name=FLAGS.encodings, depth_scale=FLAGS.depth_scale,
            intrinsics=FLAGS.intrinsics, fill_holes=FLAGS.fill_holes,
            jet_max_depth=FLAGS.jet_max_depth, num_classes=FLAGS.num_classes,
            ignore_label=FLAGS.ignore_label, label_map=FLAGS.label_map,
            num_shards=FLAGS.num_shards, workers=FLAGS.workers,
            image_format=FLAGS.image_format, overwrite=FLAGS.overwrite,
            allow_8bit_depth=FLAGS.allow_8bit_depth, command=shlex.join(sys.argv))
    return 0


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main, argv=without_debug(_dashes_to_underscores(sys.argv)))
