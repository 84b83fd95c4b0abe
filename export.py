"""Export a trained model for serving: python export.py --config run.config
--output models/segmenter [--format savedmodel|onnx|tflite] [--checkpoint PATH]
[--depth-input units|metres] [--version N [--overwrite]] [--size H W]

Writes `<output>/<version>/` (default version: one more than the highest existing; an
existing version is refused unless --overwrite). savedmodel (TF Serving): signatures
`serving_default` (raw sensor tensors per modality: rgb uint8 [B,H,W,3]; raw depth uint16 in
stored units, millimetres by default, or float32 metres with `--depth-input metres`),
`image_bytes` (PNG/JPEG bytes per modality, 16-bit PNG for depth) and `records` (serialized
records of our format). onnx: `model.onnx`, the serving_default graph, any batch and size.
tflite: `model.tflite`, one image of --size (default the config's height and width). All
return `labels` int32 [B,H,W] and `probabilities` float32 [B,H,W,C]; normalisation and
padding to a multiple of 32 are in the graph.
"""

import argparse
import sys

from ssma_tf.errors import InputError, print_cli_error
from ssma_tf.export.portable import FORMATS
from ssma_tf.export.serving import DEPTH_INPUTS


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, help="flat key: value YAML config")
    parser.add_argument("--output", required=True, help="model folder (versions go inside)")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (TF Serving), onnx or tflite")
    parser.add_argument("--checkpoint", help="checkpoint folder or prefix (default: config)")
    parser.add_argument("--depth-input", choices=DEPTH_INPUTS, default="units",
                        help="raw depth as uint16 stored units (mm) or float32 metres")
    parser.add_argument("--version", type=int, help="version folder number (default: next)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --version folder")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="tflite input size (default: the config's height and width)")
    parser.add_argument("--override", action="append", default=[], help="key=value (repeatable)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        from ssma_tf.export.portable import export_file
        from ssma_tf.export.serving import export_saved_model
        from ssma_tf.runs import load_eval_config, load_run

        if args.size and args.format != "tflite":
            raise InputError("--size applies to --format tflite only (the others take any size)")
        run = load_run(load_eval_config(args.config, args.override), args.checkpoint)
        options = dict(depth_max=run.config.depth_max, config_dict=run.config.to_dict(),
                       depth_input=args.depth_input, version=args.version,
                       run_info=run.run_info, overwrite=args.overwrite)
        if args.format == "savedmodel":
            path = export_saved_model(run.model, run.specs, args.output, **options)
        else:
            size = args.size or (run.config.height, run.config.width)
            path = export_file(run.model, run.specs, args.output, args.format, size=size,
                               **options)
    except InputError as exc:
        return print_cli_error(exc)
    what = ("signatures serving_default, image_bytes, records" if args.format == "savedmodel"
            else args.format)
    print(f"{path} written ({what}: inputs {', '.join(run.specs)}; outputs labels, "
          "probabilities)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
