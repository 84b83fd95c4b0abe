"""U2PL's pieces: entropy percentile split, per-class negative memory bank, InfoNCE.

Everything works on pixels flattened to rows: features [N, D], labels [N], masks [N].

- `percentile(values, mask, q)`: numpy's default (linear) percentile of the masked values.
- `reliability_masks`: the reliable (entropy <= the alpha-th percentile) and unreliable
  (entropy >= the (100 - alpha)-th percentile) pixels among the valid ones.
- `MemoryBank`: one ring buffer per class in a single variable (class c owns rows
  [offset_c, offset_c + capacity_c)), a write pointer and a fill count per class; pushing n
  keys writes them at the pointer (wrapping around), so the buffer always holds the latest
  `capacity` keys, the oldest overwritten first. Saved with the checkpoint. Pushes gather
  the keys of every replica first (replica order), so every replica's bank is identical.
- `contrastive_loss`: the per-class InfoNCE of anchors against their class prototype and
  negatives sampled from the bank.
"""

from typing import NamedTuple

import tensorflow as tf

CONTRAST_MODES = ("code", "paper")
EPS = 1e-10


def entropy(probs):
    """-sum_c p log(p + 1e-10) over the last axis."""
    return -tf.reduce_sum(probs * tf.math.log(probs + EPS), axis=-1)


def percentile(values, mask, q):
    """The q-th percentile (0..100, linear interpolation as numpy's default) of `values`
    where `mask`; 0.0 when the mask is empty."""
    picked = tf.sort(tf.boolean_mask(tf.reshape(values, [-1]), tf.reshape(mask, [-1])))
    count = tf.shape(picked)[0]
    position = tf.cast(q, tf.float32) / 100.0 * tf.cast(tf.maximum(count - 1, 0), tf.float32)
    low = tf.cast(tf.floor(position), tf.int32)
    high = tf.minimum(low + 1, tf.maximum(count - 1, 0))
    padded = tf.concat([picked, [0.0]], 0)      # an empty mask reads the sentinel 0
    below, above = tf.gather(padded, low), tf.gather(padded, high)
    return below + (above - below) * (position - tf.cast(low, tf.float32))


def reliability_masks(entropy_map, valid, alpha):
    """(reliable, unreliable) bool like `entropy_map`: valid pixels with entropy <= the
    alpha-th percentile of the valid pixels' entropy, and those >= the (100 - alpha)-th."""
    low = percentile(entropy_map, valid, alpha)
    high = percentile(entropy_map, valid, 100.0 - alpha)
    return valid & (entropy_map <= low), valid & (entropy_map >= high)


def keep_reliable(entropy_map, valid, drop_percent):
    """bool: valid pixels whose entropy is below the (100 - drop_percent)-th percentile (the
    unsupervised loss drops the `drop_percent` % most uncertain)."""
    return valid & (entropy_map < percentile(entropy_map, valid, 100.0 - drop_percent))


def sample_indices(mask, count, seed):
    """int32 [count]: row indices drawn uniformly with replacement among the True rows of
    `mask` [N] (all 0 when there are none)."""
    candidates = tf.cast(tf.where(mask)[:, 0], tf.int32)
    available = tf.shape(candidates)[0]
    draw = tf.random.stateless_uniform([count], seed, 0, tf.maximum(available, 1), tf.int32)
    return tf.gather(tf.concat([candidates, [0]], 0), draw)


def info_nce(anchors, positive, negatives, temperature):
    """mean over anchors of CE(cos(anchor, [positive, negatives]) / T, index 0).
    anchors [K, D], positive [D] (one for all anchors), negatives [K, M, D]."""
    anchors = tf.math.l2_normalize(anchors, -1)
    keys = tf.concat([tf.broadcast_to(positive[None, None], [tf.shape(anchors)[0], 1,
                                                             tf.shape(positive)[0]]),
                      negatives], axis=1)
    logits = tf.einsum("kd,kmd->km", anchors, tf.math.l2_normalize(keys, -1)) / temperature
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.zeros(tf.shape(logits)[:1], tf.int32), logits=logits))


def gather_replicas(keys, classes):
    """(keys, classes) of every replica, concatenated in replica order (as they are outside
    tf.distribute): each replica pads its rows to the largest count first."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return keys, classes
    count = tf.shape(keys)[0]
    most = tf.reduce_max(context.all_gather(tf.reshape(count, [1]), axis=0))
    real = context.all_gather(tf.sequence_mask(count, most, tf.int32), axis=0) > 0
    keys = context.all_gather(tf.pad(keys, [[0, most - count], [0, 0]]), axis=0)
    classes = context.all_gather(tf.pad(classes, [[0, most - count], [0, 0]]), axis=0)
    return tf.boolean_mask(keys, real), tf.boolean_mask(classes, real)


def _state(value, name):
    return tf.Variable(value, trainable=False, name=name,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class MemoryBank(tf.Module):
    """Per-class FIFO queues of `dim`-d keys, `capacities[c]` rows for class c."""

    def __init__(self, capacities, dim):
        super().__init__(name="memory_bank")
        self.capacities = [int(c) for c in capacities]
        self.offsets = [sum(self.capacities[:c]) for c in range(len(self.capacities))]
        self.dim = int(dim)
        self.keys = _state(tf.zeros([sum(self.capacities), self.dim]), "keys")
        self.pointers = _state(tf.zeros([len(self.capacities)], tf.int32), "pointers")
        self.counts = _state(tf.zeros([len(self.capacities)], tf.int32), "counts")

    def push(self, keys, classes):
        """Append keys [n, dim] to the queues of the classes they are marked for (`classes`
        [n, C] bool/int: a key may go to several), oldest overwritten when full."""
        keys = tf.cast(keys, tf.float32)
        classes = tf.cast(classes, tf.bool)
        pointers, counts = tf.unstack(self.pointers), tf.unstack(self.counts)
        rows, values = [], []
        for c, capacity in enumerate(self.capacities):
            new = tf.boolean_mask(keys, classes[:, c])[-capacity:]
            written = tf.shape(new)[0]
            rows.append(self.offsets[c] + (pointers[c] + tf.range(written)) % capacity)
            values.append(new)
            pointers[c] = (pointers[c] + written) % capacity
            counts[c] = tf.minimum(counts[c] + written, capacity)
        self.keys.scatter_update(tf.IndexedSlices(tf.concat(values, 0), tf.concat(rows, 0)))
        self.pointers.assign(tf.stack(pointers))
        self.counts.assign(tf.stack(counts))

    def contents(self, c):
        """Class c's keys, oldest first (for inspection)."""
        capacity, count = self.capacities[c], self.counts[c]
        start = tf.where(count < capacity, 0, self.pointers[c])
        rows = self.offsets[c] + (start + tf.range(count)) % capacity
        return tf.gather(self.keys, rows)

    def sample(self, c, count, seed):
        """[count, dim] keys of class c (a tensor index) drawn uniformly with replacement."""
        capacities = tf.constant(self.capacities, tf.int32)
        offsets = tf.constant(self.offsets, tf.int32)
        filled = tf.maximum(tf.gather(self.counts, c), 1)
        draw = tf.random.stateless_uniform([count], seed, 0, filled, tf.int32)
        start = tf.where(tf.gather(self.counts, c) < tf.gather(capacities, c), 0,
                         tf.gather(self.pointers, c))
        return tf.gather(self.keys, tf.gather(offsets, c) + (start + draw) % tf.gather(
            capacities, c))


def class_ranks(probs):
    """int32 [N, C]: the rank of each class in each row's descending probabilities (0 = top)."""
    order = tf.argsort(probs, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def negative_candidates(labels, probs, unreliable, labeled, *, num_classes, low_rank,
                        high_rank, negative_threshold, mode):
    """bool [N, C]: the rows that become class c's negative keys.

    code (the released code): unreliable rows labeled c whose probability of c is below
    `negative_threshold`; on labeled rows c must also be in the top `low_rank` while the
    label is not c (so never: issue #171), on unlabeled rows c must rank in [low_rank,
    high_rank). paper: the same ranks, but the row's label need not be c (labeled rows: any
    valid label other than c; unlabeled ones: unreliable), i.e. pixels probably not c."""
    classes = tf.range(num_classes)[None]
    is_class = tf.equal(labels[:, None], classes)
    ranks = class_ranks(probs)
    ranked = tf.where(labeled[:, None], (ranks < low_rank) & ~is_class,
                      (ranks >= low_rank) & (ranks < high_rank))
    base = unreliable[:, None] & (probs < negative_threshold) & ranked
    return base & is_class if mode == "code" else base


class ContrastSettings(NamedTuple):
    """The contrastive loss's constants (config keys of the same names)."""
    num_classes: int
    num_queries: int = 256
    num_negatives: int = 50
    temperature: float = 0.5
    anchor_threshold: float = 0.3
    negative_threshold: float = 1.0
    low_rank: int = 3
    high_rank: int = 20
    contrast_mode: str = "code"

    @classmethod
    def from_config(cls, config):
        return cls(**{name: getattr(config, name) for name in cls._fields})


def contrastive_loss(rep, rep_teacher, labels, probs, reliable, unreliable, labeled, bank,
                     settings, seed):
    """U2PL's contrastive loss on flattened pixels; pushes this step's negatives into `bank`
    first (as the code), then returns the mean over the valid classes of the InfoNCE.

    rep / rep_teacher [N, D] (student with gradient, teacher), labels [N] (truth on labeled
    rows, pseudo labels on unlabeled ones, `num_classes` or more where invalid), probs
    [N, C] (teacher), reliable / unreliable [N] (every valid labeled pixel is both),
    labeled [N]. A class is valid when it has a reliable pixel; 0 if at most one is. Per
    valid class (slot k of the valid classes in id order): anchors = `num_queries` draws
    among its reliable pixels with probability > anchor_threshold, positive = the mean
    teacher feature of its reliable pixels, negatives = num_queries x num_negatives draws
    from the bank; a slot without anchors or an empty queue adds 0. mode "code": the
    anchors and positive of slot k come from class id k, its negatives from the k-th valid
    class (the code's index mix-up, issue #111); "paper": all from the k-th valid class."""
    s = settings
    num_classes = s.num_classes
    is_class = tf.equal(labels[:, None], tf.range(num_classes)[None])       # [N, C]
    reliable_c = is_class & reliable[:, None]
    anchors_c = reliable_c & (probs > s.anchor_threshold)
    negatives = negative_candidates(labels, probs, unreliable, labeled,
                                    num_classes=num_classes, low_rank=s.low_rank,
                                    high_rank=s.high_rank,
                                    negative_threshold=s.negative_threshold,
                                    mode=s.contrast_mode)
    has_negative = tf.reduce_any(negatives, axis=-1)
    keys, classes = gather_replicas(tf.boolean_mask(tf.stop_gradient(rep_teacher), has_negative),
                                    tf.cast(tf.boolean_mask(negatives, has_negative), tf.int32))
    bank.push(keys, classes)

    weights = tf.cast(reliable_c, tf.float32)
    prototypes = tf.einsum("nc,nd->cd", weights, tf.cast(rep_teacher, tf.float32)) / tf.maximum(
        tf.reduce_sum(weights, 0), 1.0)[:, None]                             # [C, D]
    valid = tf.reduce_any(reliable_c, axis=0)
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
    valid_ids = tf.concat([tf.cast(tf.where(valid)[:, 0], tf.int32),
                           tf.zeros([num_classes], tf.int32)], 0)
    rep = tf.cast(rep, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2 * num_classes)
    total = 0.0
    for k in range(num_classes):
        queue_class = valid_ids[k]
        own = tf.constant(k) if s.contrast_mode == "code" else queue_class
        anchor_rows = sample_indices(tf.gather(anchors_c, own, axis=1), s.num_queries,
                                     seeds[2 * k])
        negative_keys = tf.reshape(bank.sample(queue_class, s.num_queries * s.num_negatives,
                                               seeds[2 * k + 1]),
                                   [s.num_queries, s.num_negatives, bank.dim])
        term = info_nce(tf.gather(rep, anchor_rows), tf.stop_gradient(prototypes[own]),
                        negative_keys, s.temperature)
        usable = ((k < num_valid) & tf.reduce_any(tf.gather(anchors_c, own, axis=1))
                  & (tf.gather(bank.counts, queue_class) > 0))
        total += tf.where(usable, term, 0.0)
    return tf.where(num_valid > 1, total / tf.cast(tf.maximum(num_valid, 1), tf.float32), 0.0)
