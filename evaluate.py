"""Evaluate a trained model on the config's test_data (or val_data): per-class IoU, mIoU.

  python evaluate.py --config run.config [--checkpoint PATH]
      [--missing-modality depth|all|subsets] [--random-missing R [--draws N]]
      [--noise MODALITY=SIGMA ...] [--mode whole|slide --crop N[,W] --stride N[,W]]
      [--scales 0.75,1,1.25] [--flip] [--miou-rule standard|ssma] [--output metrics.json]
      [--overlays DIR --num-overlays N]

One confusion matrix over the whole set per column; one table and one JSON per run.
`--missing-modality all` adds each modality missing (all-zero input); `subsets` scores every
non-empty subset of the modalities and their mean (mIoU^Avg); `--random-missing R` drops
each modality per sample with rate R (never all; seeded) and reports the mean of `--draws`
passes; `--noise depth=0.1` adds Gaussian noise to that normalised input (repeatable).
mIoU rules: "standard" skips classes absent from ground truth and prediction; "ssma" (the
original code) averages every class except the ignored one, counting absent classes as 0.
"""

import argparse
import json
import os
import sys

import keras

from ssma_tf.cli import guarded
from ssma_tf.evaluation.inference import add_arguments, settings_from_args
from ssma_tf.evaluation.metrics import MIOU_RULES, format_table


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, help="flat key: value YAML config")
    parser.add_argument("--checkpoint", help="checkpoint folder or prefix (default: config)")
    parser.add_argument("--missing-modality",
                        help="modality fed as zeros, 'all' (each in turn) or 'subsets'")
    parser.add_argument("--random-missing", type=float, metavar="R",
                        help="drop each modality per sample with rate R (never all)")
    parser.add_argument("--draws", type=int, default=3,
                        help="passes averaged for --random-missing (default 3)")
    parser.add_argument("--noise", action="append", default=[], metavar="MODALITY=SIGMA",
                        help="Gaussian noise on a normalised input, one column each "
                             "(repeatable; rgb=0.1,depth=0.1 noises both)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--scales", help="comma-separated scales (default: config eval_scales)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="add flipped predictions (default: config eval_flip)")
    add_arguments(parser)
    parser.add_argument("--miou-rule", choices=MIOU_RULES, default="standard")
    parser.add_argument("--overlays", help="folder for prediction / ground-truth overlays")
    parser.add_argument("--num-overlays", type=int,
                        help="overlays for the first N images (default: config num_overlays, "
                             "or 4 with --overlays)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per batch (>1 needs equal image sizes)")
    parser.add_argument("--override", action="append", default=[], help="key=value (repeatable)")
    return parser


def run_evaluation(args):
    """Evaluates as `args` says; returns the JSON-ready report."""
    from ssma_tf.data.pipeline import eval_dataset, report_readable
    from ssma_tf.evaluation import robustness
    from ssma_tf.evaluation.evaluator import evaluate
    from ssma_tf.evaluation.inference import Inference
    from ssma_tf.runs import eval_records, load_eval_config, load_run

    config = load_eval_config(args.config, args.override)
    keras.utils.set_random_seed(config.seed)
    records = eval_records(config)
    inference = Inference.from_config(config, **settings_from_args(args))
    num_overlays = args.num_overlays if args.num_overlays is not None else (
        config.num_overlays or (4 if args.overlays else 0))
    cases = robustness.protocol_cases(
        config.modalities, missing=args.missing_modality, random_rate=args.random_missing,
        draws=args.draws, noise=args.noise, seed=config.seed)
    if config.skip_corrupt_records:
        report_readable(records)
    dataset = eval_dataset(records, modalities=config.modalities, batch_size=args.batch_size,
                           ignore_label=config.ignore_label, depth_max=config.depth_max,
                           skip_corrupt=config.skip_corrupt_records)
    run = load_run(config, args.checkpoint)
    results = {}
    for case in cases:
        overlays = args.overlays
        if overlays and len(cases) > 1:
            overlays = os.path.join(overlays, case.heading.replace(" ", "_"))
        results[case.heading] = evaluate(
            run.model, dataset, num_classes=config.num_classes, ignore_label=config.ignore_label,
            missing_modality=case.missing, perturb=case.perturb, inference=inference,
            overlays_dir=overlays, num_overlays=num_overlays, palette=run.palette,
            class_names=run.class_names, miou_rule=args.miou_rule, specs=run.specs)
    results = robustness.report(cases, results)
    return {"config_file": config.source, "checkpoint": run.checkpoint, "records": records,
            "model": config.model, "inference": inference.to_json(), "results": results}


@guarded
def main(argv=None):
    import tensorflow as tf

    args = _parser().parse_args(argv)
    try:
        report = run_evaluation(args)
    except tf.errors.DataLossError as exc:   # name the file and offset of the bad record
        from ssma_tf.data.pipeline import record_error
        from ssma_tf.runs import eval_records, load_eval_config

        raise record_error(eval_records(load_eval_config(args.config, args.override)),
                           exc) from None
    print(format_table(report["results"], title=f"{report['records']} ({report['checkpoint']})"))
    if args.output:
        from ssma_tf.io_utils import atomic_write

        with atomic_write(args.output) as handle:
            json.dump(report, handle, indent=1)
        print(f"metrics written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
