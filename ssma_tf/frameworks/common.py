"""Helpers every framework may use: batch assembly, ramp-ups, EMA, stateless step seeds.

Randomness is stateless: seeds are derived from (config seed, step, replica, purpose), so a
step is reproducible, replicas draw independently and no Python randomness runs in graphs.
Each purpose has its own salt below, so two draws of one step never share a seed.
"""

import tensorflow as tf

SALT_MODDROP = 0          # SupervisedModDrop's labeled-row mask
SALT_STUDENT_MASK = 1     # mean-teacher family: the student batch's modality mask
SALT_TEACHER_MASK = 2     # ... the teacher batch's (independent) mask
SALT_CUTMIX = 3           # CutMix boxes (mean-teacher family, CPS)


def step_seed(seed, step, salt):
    """A stateless seed unique to (seed, step, this replica, salt)."""
    replica = tf.distribute.get_replica_context()
    replica_id = 0 if replica is None else replica.replica_id_in_sync_group
    out = tf.constant([int(seed), int(salt)], tf.int64)
    out = tf.random.experimental.stateless_fold_in(out, tf.cast(step, tf.int64))
    return tf.random.experimental.stateless_fold_in(out, tf.cast(replica_id, tf.int64))


def concat_inputs(*parts):
    """Row-wise concatenation of input dicts with the same keys."""
    return {name: tf.concat([part[name] for part in parts], axis=0) for name in parts[0]}


def num_rows(batch):
    """Static (else dynamic) batch size of a tensor or an input dict."""
    value = next(iter(batch.values())) if isinstance(batch, dict) else batch
    return value.shape[0] if value.shape[0] is not None else tf.shape(value)[0]


def sigmoid_rampup(step, rampup_steps):
    """exp(-5 (1 - t/T)^2) for t < T, else 1; T = 0 means no ramp-up (always 1)."""
    if rampup_steps <= 0:
        return tf.constant(1.0)
    progress = tf.clip_by_value(tf.cast(step, tf.float32) / rampup_steps, 0.0, 1.0)
    return tf.exp(-5.0 * tf.square(1.0 - progress))


def ema_update(teacher_variables, student_variables, decay):
    """teacher <- decay * teacher + (1 - decay) * student, variable by variable."""
    for teacher_var, student_var in zip(teacher_variables, student_variables):
        value = tf.cast(decay, teacher_var.dtype) * teacher_var + tf.cast(
            1.0 - decay, teacher_var.dtype) * tf.cast(student_var, teacher_var.dtype)
        teacher_var.assign(value)
