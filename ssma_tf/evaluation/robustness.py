"""The missing-modality robustness protocol: which evaluation runs one report holds.

- entire-missing: `--missing-modality NAME`, `all` (full input and each modality missing) or
  `subsets` (every non-empty subset of the modalities present, the rest missing, and their
  mean mIoU^Avg);
- random-missing at rate r: per sample each modality is dropped with probability r, never all
  at once (a sample that drew all of them keeps one, picked uniformly); the mean over N
  seeded draws of the whole set;
- noisy modalities: Gaussian noise of standard deviation sigma added to a modality's
  normalised input.
A dropped modality is the toolkit's "missing" value: all-zero normalised input.
"""

import dataclasses
import itertools

import numpy as np
import tensorflow as tf

from ssma_tf.errors import InputError

SCORES = ("miou", "pixel_accuracy", "mean_class_accuracy")


@dataclasses.dataclass
class Case:
    """One evaluation pass: its column `heading`, the modalities `missing` in every sample,
    and the `perturb(inputs) -> inputs` applied to each batch (None: the inputs as they are)."""

    heading: str
    missing: tuple = ()
    perturb: object = None
    group: str | None = None     # cases averaged into one summary column


def random_missing(rate, seed):
    """perturb: each sample drops each modality with probability `rate`; a sample that
    would drop all keeps one chosen uniformly. Seeded: the same draws for the same batches."""
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"--random-missing: expected a rate in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)

    def perturb(inputs):
        names = list(inputs)
        batch = int(tf.shape(inputs[names[0]])[0])
        keep = rng.random((batch, len(names))) >= rate
        none_kept = ~keep.any(axis=1)
        keep[none_kept, rng.integers(0, len(names), int(none_kept.sum()))] = True
        return {n: x * tf.constant(keep[:, i].astype(np.float32).reshape(-1, 1, 1, 1))
                for i, (n, x) in enumerate(inputs.items())}
    return perturb


def gaussian_noise(sigmas, seed):
    """perturb: adds N(0, sigma^2) to the normalised input of each modality in `sigmas`."""
    rng = np.random.default_rng(seed)

    def perturb(inputs):
        return {n: x + tf.constant(rng.normal(0.0, sigmas[n], x.shape).astype(np.float32))
                if n in sigmas else x for n, x in inputs.items()}
    return perturb


def parse_noise(text, modalities):
    """"depth=0.1" or "rgb=0.05,depth=0.1" -> {modality: sigma}; InputError naming --noise."""
    sigmas = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            sigma = float(value)
        except ValueError:
            sigma = -1.0
        if not sep or sigma < 0:
            raise InputError(f"--noise {text!r}: expected MODALITY=SIGMA (sigma >= 0)")
        if name not in modalities:
            raise InputError(f"--noise {text!r}: {name!r} is not a model input "
                             f"({', '.join(modalities)})")
        sigmas[name] = sigma
    return sigmas


def protocol_cases(modalities, *, missing=None, random_rate=None, draws=3, noise=(), seed=0):
    """The evaluation passes of one report, in column order. `missing`: None, a modality,
    "all" or "subsets"; `random_rate`: r (with `draws` passes); `noise`: --noise texts."""
    modalities = list(modalities)
    if missing and missing not in ("all", "subsets") and missing not in modalities:
        raise InputError(f"--missing-modality {missing!r}: the model inputs are "
                         f"{sorted(modalities)} (or 'all', 'subsets')")
    if draws < 1:
        raise InputError(f"--draws: expected at least 1, got {draws}")
    if missing == "subsets":
        cases = [Case("full" if len(kept) == len(modalities) else "+".join(kept),
                      tuple(n for n in modalities if n not in kept), group="mIoU^Avg")
                 for kept in subsets(modalities)]
    elif missing == "all":
        cases = [Case("full")] + [Case(f"no {n}", (n,)) for n in modalities]
    elif missing:
        cases = [Case(f"no {missing}", (missing,))]
    else:
        cases = [Case("full")]
    if random_rate is not None:
        cases += [Case(f"random {random_rate:g} #{d + 1}",
                       perturb=random_missing(random_rate, [seed, d]),
                       group=f"random {random_rate:g}") for d in range(draws)]
    for index, text in enumerate(noise):
        cases.append(Case(f"noise {text}", perturb=gaussian_noise(
            parse_noise(text, modalities), [seed, 1000 + index])))
    return cases


def subsets(modalities):
    """Every non-empty subset of `modalities` (in their order), the largest first."""
    return [combo for size in range(len(modalities), 0, -1)
            for combo in itertools.combinations(modalities, size)]


def mean_result(results):
    """The mean of evaluate() results: scores and per-class IoU averaged (a class absent in
    every member stays None), with the members' scores under "members"."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    classes = list(results[0]["per_class_iou"])
    summary = {key: mean([r[key] for r in results]) for key in SCORES}
    summary["per_class_iou"] = {c: mean([r["per_class_iou"][c] for r in results])
                                for c in classes}
    summary["members"] = [{key: r[key] for key in SCORES} for r in results]
    return summary


def report(cases, results):
    """{heading: result} for the table and JSON: each group's passes replaced by their mean
    under the group's name, except mIoU^Avg's subsets, which stay beside their mean."""
    out = {}
    groups = {}
    for case in cases:
        result = results[case.heading]
        if case.group is None or case.group == "mIoU^Avg":
            out[case.heading] = result
        if case.group:
            groups.setdefault(case.group, []).append(result)
    for group, members in groups.items():
        summary = mean_result(members)
        if group != "mIoU^Avg":
            summary["draws"] = len(members)
        out[group] = summary
    return out
