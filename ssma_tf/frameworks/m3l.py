"""M3L (multimodal mean teacher with a masked student) and mean teacher + modality dropout.

M3L step (M3L's meanteachermaskedstudent), per replica with L labeled and U unlabeled rows:
  student batch [x_l ; x_l ; x_u]; rows [L, 2L+U) each get one modality zeroed (or none),
  uniformly; the first x_l copy stays clean;
  supervised loss on the first 2L student rows against [y ; y];
  the teacher sees the same rows UNMASKED and labels all 2L+U rows;
  pseudo-label loss on all rows; EMA teacher as in frameworks/mean_teacher.py.
Mean teacher + modality dropout (M3L's meanteachermoddrop) is the same step with the teacher masked
too, by an independent draw. With a unimodal model nothing is masked (a warning is logged):
both then reduce to a mean teacher whose labeled rows appear twice.
The teacher is the evaluated model.
"""

from ssma_tf.frameworks.mean_teacher import KEYS, MeanTeacher
from ssma_tf.registry import register_framework


class M3L(MeanTeacher):
    """Mean teacher whose student sees randomly masked modalities."""

    labeled_copies = 2
    mask_student = True


class MeanTeacherModDrop(M3L):
    """M3L's step with the teacher's input masked as well (independent draw)."""

    mask_teacher = True


register_framework("m3l", M3L, keys=KEYS)
register_framework("mean_teacher_moddrop", MeanTeacherModDrop, keys=KEYS)
