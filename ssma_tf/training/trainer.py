"""The generic trainer: strategy, framework, data, loop, checkpoints, summaries, progress.

Re-running the same config resumes from the latest checkpoint in `checkpoint` at the exact
step. Only the chief writes to `checkpoint`; other workers save into a temporary folder
(the save is collective) that is deleted at the end.

Logged values stay on the device between "sync points": the log steps (`skip_step`), the
save steps, the validation steps (`eval_step`, training/validation.py), the summary-image
steps and the last step. There they are brought to the host and checked: a value that was
NaN or infinite at some step since the previous sync point stops the run without saving.

A run owns its checkpoint folder (a lock naming its pid and host: a second run on the same
folder is refused) and checks the config, the records and a checkpoint to resume before it
creates anything; a run that fails before its first checkpoint leaves no folder it created.
SIGTERM or SIGINT stops at the end of the current step with a checkpoint there
(training/preemption.py); a save that fails (disk full) leaves the previous checkpoint and
no partial one (training/saving.py).
"""

import os
import shutil

import keras
import tensorflow as tf

from ssma_tf.data import schema
from ssma_tf.data.pipeline import (
    check_crop,
    check_labels,
    record_error,
    report_readable,
    select_modalities,
    train_dataset,
)
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import build as framework_build
from ssma_tf.io_utils import FolderLock
from ssma_tf.models.factory import crop_multiple, model_entry
from ssma_tf.training import checkpoints, compatibility, saving
from ssma_tf.training.preemption import Preempted, stop_on_signals
from ssma_tf.training.progress import Progress
from ssma_tf.training.run_info import write_run_info
from ssma_tf.training.strategy import is_chief, make_strategy, worker_id
from ssma_tf.training.summaries import Summaries
from ssma_tf.training.validation import Validator

SUMMARY_IMAGES = 2


class NonFiniteLossError(RuntimeError):
    """Training stopped: a loss became NaN or infinite (the bad state is not saved)."""


def _required(config, key):
    value = getattr(config, key)
    if value in (None, ""):
        raise ConfigError(f"{config.source}: key '{key}' is required for training")
    return value


def _specs(config, records, cropped=False):
    """The records' specs of the config's modalities, after checking their labels against
    num_classes and, for records that are `cropped` (the training streams), their image
    size against the crop (check_crop)."""
    _, info = schema.resolve_records(records)
    if config.num_classes is not None and info.labeled:
        check_labels(records, info, config.num_classes, config.ignore_label, config.source)
    if cropped:
        check_crop(records, info, (config.height, config.width), config.scale_max,
                   config.source)
    return select_modalities(records, info, config.modalities)


UNLABELED_SEED_OFFSET = 1_000_003


def _datasets(config, strategy, framework, seed):
    """Distributed iterators: labeled stream and (if the framework wants it) unlabeled."""
    crop = (config.height, config.width)

    def stream(records, batch_size, labeled, two_views=False, subset=None):
        # the unlabeled stream draws its own crops, flips and jitter, not the labeled stream's
        stream_seed = seed if labeled else seed + UNLABELED_SEED_OFFSET

        def dataset_fn(ctx):
            return train_dataset(
                records, modalities=config.modalities,
                batch_size=ctx.get_per_replica_batch_size(batch_size), crop=crop,
                ignore_label=config.ignore_label, scale_range=(config.scale_min, config.scale_max),
                flip=config.flip, photometric=config.photometric, seed=stream_seed,
                input_context=ctx,
                labeled=labeled, two_views=two_views, shuffle_buffer=config.shuffle_buffer,
                depth_max=config.depth_max, subset=subset,
                skip_corrupt=config.skip_corrupt_records)
        return iter(strategy.distribute_datasets_from_function(dataset_fn))

    split = None  # labeled_ratio without unlabeled_data: split train_data itself
    if config.labeled_ratio is not None and not config.unlabeled_data:
        split = (config.labeled_ratio, config.split_seed)
    labeled = stream(config.train_data, config.batch_size, True,
                     subset=split and (*split, True))
    unlabeled = None
    if framework.uses_unlabeled:
        records = config.train_data if split else _required(config, "unlabeled_data")
        unlabeled = stream(records, framework.global_unlabeled_batch_size, False,
                           framework.two_views, subset=split and (*split, False))
    return labeled, unlabeled


def _summary_batch(config):
    """A fixed small labeled batch for the prediction images."""
    records = config.val_data or config.train_data
    ds = train_dataset(records, modalities=config.modalities, batch_size=SUMMARY_IMAGES,
                       crop=(config.height, config.width), ignore_label=config.ignore_label,
                       scale_range=(1.0, 1.0), flip=False, photometric=False, seed=config.seed,
                       shuffle_buffer=1, depth_max=config.depth_max,
                       skip_corrupt=config.skip_corrupt_records)
    return next(iter(ds))


def _check_batch(config, strategy):
    replicas = strategy.num_replicas_in_sync
    for key in ("batch_size", "unlabeled_batch_size"):
        value = getattr(config, key)
        if value is not None and value % replicas:
            raise ConfigError(f"{config.source}: key '{key}' ({value}) must be a multiple of "
                              f"the {replicas} replicas")


def _check_crop(config):
    """The crop must divide by the model's crop multiple (AdapNet++ and SSMA over it join
    stride-16, 8 and 4 features: 16; evaluation and serving pad any image themselves)."""
    multiple = crop_multiple(config)
    for key in ("height", "width"):
        value = getattr(config, key)
        if value % multiple:
            raise ConfigError(f"{config.source}: key '{key}' ({value}) must be a multiple of "
                              f"{multiple} for {config.model}")


def _needs_experts(config):
    """Whether the model's recipe copies stage-1 experts in on a fresh run (SSMA, stage
    fusion)."""
    rule = model_entry(config).info.get("initialises_experts")
    return bool(rule and rule(config))


def initialise(framework, config):
    """Fresh run only: every network in `framework.networks()` from init_checkpoint
    (/intialize), else SSMA's experts (stage fusion). A mean teacher's teacher then copies
    the student at its first semi-supervised step."""
    for index, (model, _) in enumerate(framework.networks()):
        if config.init_checkpoint:   # an imported file's report printed once
            checkpoints.init_from_checkpoint(model, config.init_checkpoint, config=config,
                                             verbose=index == 0)
        elif _needs_experts(config):
            checkpoints.init_experts(model, config)




def _reduce(strategy, framework, per_replica):
    """Each logged value reduced over the replicas as `framework.log_reduction` says."""
    return {key: strategy.reduce(framework.log_reduction(key), value, axis=None)
            for key, value in per_replica.items()}


def make_step_fn(config, strategy, framework, supervised_only=False):
    """The distributed step: framework.train_step, or with `supervised_only` its
    supervised_only_step (the unlabeled stream is then not read)."""
    def replica_step(labeled, unlabeled):
        if supervised_only:
            return framework.supervised_only_step(labeled)
        return framework.train_step(labeled, unlabeled)

    if config.xla:  # the model builders get xla_friendly=config.xla (models/factory.py)
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def step_fn(labeled_it, unlabeled_it):
        labeled = next(labeled_it)
        unlabeled = None
        if unlabeled_it is not None and not supervised_only:
            unlabeled = next(unlabeled_it)
        out = _reduce(strategy, framework, strategy.run(replica_step,
                                                        args=(labeled, unlabeled)))
        framework.step.assign_add(1)
        return out

    return step_fn


def _latest(ckpt_dir):
    return tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None


def _start_checks(config, model_builder):
    """Everything that can be checked before a folder is made or a model built; returns
    the config (modalities in a resumed checkpoint's order)."""
    _required(config, "checkpoint")
    _required(config, "train_data")
    _check_crop(config)
    if config.num_classes is None and (model_builder is None or config.eval_step > 0):
        _required(config, "num_classes")
    if config.eval_step > 0 and not config.val_data:
        raise ConfigError(f"{config.source}: key 'val_data' is required with eval_step "
                          f"{config.eval_step} (validation during training)")
    latest = _latest(config.checkpoint)
    if latest:
        config = compatibility.aligned(config, latest, extra_keys=("framework",))
    elif config.init_checkpoint:
        checkpoints.find_checkpoint(config.init_checkpoint, "init_checkpoint")
    elif _needs_experts(config):
        checkpoints.expert_sources(config)
    for key in ("train_data", "val_data", "unlabeled_data"):
        if getattr(config, key):
            _specs(config, getattr(config, key), cropped=key != "val_data")
    if config.skip_corrupt_records:
        for key in ("train_data", "val_data", "unlabeled_data"):
            if getattr(config, key):
                report_readable(getattr(config, key))
    return config


def train(config, model_builder=None):
    """Train per `config`; returns the checkpoint folder. Resumes when it holds a checkpoint.
    Raises Preempted after saving when SIGTERM / SIGINT stopped it."""
    config = _start_checks(config, model_builder)
    ckpt_dir = config.checkpoint
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    _check_batch(config, strategy)
    if not is_chief(strategy):
        return _train_naming_bad_records(config, model_builder, strategy, chief=False)
    created = not os.path.exists(ckpt_dir)
    lock = FolderLock(ckpt_dir, "training run").acquire()
    try:
        saving.remove_partial_saves(ckpt_dir)
        return _train_naming_bad_records(config, model_builder, strategy, chief=True)
    except BaseException as exc:
        if created and not _latest(ckpt_dir) and not isinstance(exc, NonFiniteLossError):
            shutil.rmtree(ckpt_dir, ignore_errors=True)     # a failed start leaves nothing
        raise
    finally:
        lock.release()


def _train_naming_bad_records(config, model_builder, strategy, chief):
    """_train; a corrupt record is an InputError naming its file and offset."""
    try:
        return _train(config, model_builder, strategy, chief)
    except tf.errors.DataLossError as exc:
        records = [config.train_data, config.unlabeled_data, config.val_data]
        raise record_error(records, exc) from None


def _train(config, model_builder, strategy, chief):
    ckpt_dir = config.checkpoint
    latest = _latest(ckpt_dir)
    specs = _specs(config, config.train_data)
    channels = {name: spec.channels for name, spec in specs.items()}
    framework = framework_build.build_framework(config, strategy, channels, model_builder)

    write_dir = ckpt_dir if chief else os.path.join(ckpt_dir, f".worker-{worker_id(strategy)}")
    checkpoint = tf.train.Checkpoint(step=framework.step,
                                     **checkpoints.trackable(framework.checkpoint_items()))
    manager = tf.train.CheckpointManager(checkpoint, write_dir, config.keep_checkpoints)
    with strategy.scope():
        if latest:
            for name, item in framework.checkpoint_items().items():
                if isinstance(item, keras.Model):
                    compatibility.check_shapes(item, latest, name, config)
            try:
                checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as exc:
                raise ConfigError(f"{config.source}: cannot resume from {latest} with this "
                                  f"config ({str(exc).strip().splitlines()[0][:200]})") from None
        else:
            initialise(framework, config)
    start = int(framework.step.numpy())
    if chief:
        write_run_info(ckpt_dir, config, {n: s.to_json() for n, s in specs.items()},
                       {"resumed_from": latest, "start_step": start})
    if start >= config.max_iteration:
        return ckpt_dir

    labeled_it, unlabeled_it = _datasets(config, strategy, framework, config.seed + start)
    step_fn = make_step_fn(config, strategy, framework)
    # a semi-supervised framework that reads sup_only_steps trains on labels alone first
    supervised_until = config.sup_only_steps if framework.uses_unlabeled and \
        "sup_only_steps" in config else 0
    if supervised_until > start:
        supervised_fn = make_step_fn(config, strategy, framework, supervised_only=True)
    summaries = Summaries(os.path.join(ckpt_dir, "train") if chief else None, config, specs)
    sample = _summary_batch(config) if chief and config.summary_step > 0 else None
    validator = None
    if config.eval_step > 0:
        validator = Validator(config, strategy, framework, checkpoint, write_dir, ckpt_dir,
                              chief, resumed=bool(latest))
    progress = Progress(start, config.max_iteration, config.batch_size)
    checked_at = start
    items = framework.checkpoint_items()
    try:
        with stop_on_signals() as stop:
            for step in range(start + 1, config.max_iteration + 1):
                fn = supervised_fn if step <= supervised_until else step_fn
                progress.update(fn(labeled_it, unlabeled_it))      # stays on the device
                if _after_step(step, config, stop, progress, checked_at, manager, validator,
                               summaries, sample, framework, chief, items):
                    checked_at = step
    finally:
        summaries.flush()
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    return ckpt_dir


def _after_step(step, config, stop, progress, checked_at, manager, validator, summaries,
                sample, framework, chief, items):
    """Log, validate, write images and save as due at `step` (all of them, then Preempted,
    when a stop signal came); whether it was a sync point."""
    final = step == config.max_iteration or bool(stop)
    log_now = step % config.skip_step == 0 or final
    images_now = sample is not None and step % config.summary_step == 0
    save_now = step % config.save_step == 0 or final
    eval_now = validator is not None and (step % config.eval_step == 0 or
                                          step == config.max_iteration)
    if not (log_now or images_now or save_now or eval_now):
        return False
    _check_finite(progress, checked_at, step, manager)
    if eval_now:
        scores, seconds = validator(step)
        summaries.scalars(step, scores)
        progress.note(scores)
        progress.exclude(seconds)
    if log_now:
        summaries.scalars(step, progress.last())
        if chief:
            progress.log(step)
        else:
            progress.line(step)                          # resets the window
    if images_now:
        summaries.images(step, framework.eval_model, *sample)
    if save_now:
        path = saving.save(manager, step, items)
        if stop and step < config.max_iteration:
            raise Preempted(f"stopped by {stop.signal_name} after step {step}; checkpoint "
                            f"saved to {path}; run the same command again to resume at step "
                            f"{step + 1}", step, path)
    return True



def _check_finite(progress, checked_at, step, manager):
    """NonFiniteLossError if a logged value was NaN or infinite at a step in
    (checked_at, step] (the values since `checked_at` were checked then)."""
    bad = progress.non_finite()
    if bad is None:
        return
    name, value = bad
    where = (f"at step {step}" if step == checked_at + 1 else
             f"between steps {checked_at + 1} and {step} (checked at log, save and eval steps)")
    raise NonFiniteLossError(f"non-finite {name} ({value}) {where}; stopped without saving; "
                             f"last checkpoint: {manager.latest_checkpoint or 'none'}")

