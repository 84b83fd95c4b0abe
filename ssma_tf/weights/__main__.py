"""Pretrained weights from other formats:

    python -m ssma_tf.weights convert SRC --config CFG --output DIR [--new-head]
        [--branch student|teacher] [--override key=value]
    python -m ssma_tf.weights inspect SRC [--limit N]

`convert` maps SRC (any format ssma_tf.weights reads, detected from the file) onto the model CFG
builds and writes a checkpoint folder that train.py (init_checkpoint), evaluate.py, export.py and
predict.py (checkpoint) accept; it prints what matched, what the source had that nothing took and
what the model keeps as built. A shape mismatch or a missing tensor is an error naming both sides
(exit 2); `--new-head` re-initialises the class-count layers instead. `inspect` prints the format,
the tensors and which importers (and models) the file fits.
"""

import argparse
import sys

from ssma_tf.errors import InputError, print_cli_error


def _parser():
    parser = argparse.ArgumentParser(prog="python -m ssma_tf.weights",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="import SRC into a checkpoint folder")
    convert.add_argument("source", help="weight file, checkpoint prefix or folder")
    convert.add_argument("-c", "--config", required=True, help="the config of the model")
    convert.add_argument("--output", required=True, help="checkpoint folder to write")
    convert.add_argument("--new-head", action="store_true",
                         help="a different class count re-initialises the classifier")
    convert.add_argument("--branch", choices=("student", "teacher"), default="teacher",
                         help="which network of a mean-teacher snapshot (default teacher)")
    convert.add_argument("--override", action="append", default=[], help="key=value")
    inspect = commands.add_parser("inspect", help="format, tensors, fitting importers")
    inspect.add_argument("source", help="weight file, checkpoint prefix or folder")
    inspect.add_argument("--limit", type=int, default=50,
                         help="tensors listed (default 50; 0: all)")
    return parser


def inspect(path, limit):
    from ssma_tf.weights.importers import fitting
    from ssma_tf.weights.readers import read_source

    source = read_source(path)
    names = source.names()
    print(f"{source.path}: format {source.format}, {len(names)} tensors")
    for name in names[:limit or None]:
        value = source.tensors[name]
        print(f"  {name}  {list(getattr(value, 'shape', ()))}  {getattr(value, 'dtype', '')}")
    if limit and len(names) > limit:
        print(f"  ... {len(names) - limit} more (--limit 0 lists all)")
    if source.format == "ssma_tf":
        print("a checkpoint of this toolkit: give it as init_checkpoint or checkpoint directly")
        return
    entries = fitting(source)
    if not entries:
        print("fits no importer")
    for entry in entries:
        print(f"fits importer {entry.name}: models {', '.join(entry.models)} ({entry.doc})")


def convert(args):
    from ssma_tf.config import load_config
    from ssma_tf.training.converted import convert as convert_weights

    config = load_config(args.config, args.override)
    name, report = convert_weights(args.source, config, args.output, new_head=args.new_head,
                                   options={"branch": args.branch})
    print(f"{args.source} -> {config.model} (importer {name})")
    for line in report.lines():
        print(line)
    print(f"checkpoint folder written: {args.output}")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            inspect(args.source, args.limit)
        else:
            convert(args)
    except InputError as exc:
        return print_cli_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
