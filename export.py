"""Export a trained model as a TF Serving SavedModel: python export.py --config run.config
--output models/segmenter [--checkpoint PATH] [--depth-input units|metres] [--version N]

Writes `<output>/<version>/` (default version: one more than the highest existing). The
`serving_default` signature takes raw sensor data per modality (rgb uint8 [B,H,W,3]; raw
depth uint16 in stored units, millimetres by default, or float32 metres with
`--depth-input metres`) and returns `labels` int32 [B,H,W] and `probabilities` float32
[B,H,W,C]. Preprocessing (normalisation, padding to a multiple of 32) is in the graph.
"""

import argparse
import sys

from ssma_tf.errors import InputError, print_cli_error
from ssma_tf.export.serving import DEPTH_INPUTS


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, help="flat key: value YAML config")
    parser.add_argument("--output", required=True, help="model folder (versions go inside)")
    parser.add_argument("--checkpoint", help="checkpoint folder or prefix (default: config)")
    parser.add_argument("--depth-input", choices=DEPTH_INPUTS, default="units",
                        help="raw depth as uint16 stored units (mm) or float32 metres")
    parser.add_argument("--version", type=int, help="version folder number (default: next)")
    parser.add_argument("--override", action="append", default=[], help="key=value (repeatable)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        from ssma_tf.export.serving import export_saved_model
        from ssma_tf.runs import load_eval_config, load_run

        run = load_run(load_eval_config(args.config, args.override), args.checkpoint)
        path = export_saved_model(
            run.model, run.specs, args.output, depth_max=run.config.depth_max,
            config_dict=run.config.to_dict(), depth_input=args.depth_input,
            version=args.version, run_info=run.run_info)
    except InputError as exc:
        return print_cli_error(exc)
    print(f"SavedModel written to {path} (signature serving_default: inputs "
          f"{', '.join(run.specs)}; outputs labels, probabilities)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
