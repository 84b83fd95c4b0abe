"""The progress line: step, loss, learning rate, images/s and ETA every skip_step steps.

Logged values stay on the device between log points: `update` adds the step's tensors to
per-key sums (no host sync); `means` and `last` bring them to the host when asked.
"""

import datetime
import math
import time

from absl import logging


class Progress:
    """Averages logged scalars over a window and formats one line per window."""

    def __init__(self, first_step, last_step, images_per_step):
        self.last_step = last_step
        self.images_per_step = images_per_step
        self._start_step = first_step
        self._window_start = time.monotonic()
        self._sums, self._counts, self._last, self._notes = {}, {}, {}, {}

    def update(self, values):
        """Add one step's {name: scalar tensor or float}, kept as device-side sums."""
        for key, value in values.items():
            self._sums[key] = value if key not in self._sums else self._sums[key] + value
            self._counts[key] = self._counts.get(key, 0) + 1
        self._last = dict(values)

    def means(self):
        """{name: float} means over the window so far (a host sync)."""
        return {k: float(v) / self._counts[k] for k, v in self._sums.items()}

    def last(self):
        """{name: float} of the latest step (a host sync)."""
        return {k: float(v) for k, v in self._last.items()}

    def non_finite(self):
        """(name, window mean) of a value that was NaN or infinite at some step of the
        window ("loss" first), else None."""
        means = self.means()
        for key in sorted(means, key=lambda k: k != "loss"):
            if not math.isfinite(means[key]):
                return key, means[key]
        return None

    def note(self, values):
        """Extra {name: float} (e.g. val_miou) shown on the next line."""
        self._notes.update(values)

    def exclude(self, seconds):
        """Leave `seconds` (e.g. a validation pass) out of the window's img/s and ETA."""
        self._window_start += seconds

    def line(self, step):
        """Formatted line for the window ending at `step`; resets the window."""
        elapsed = max(time.monotonic() - self._window_start, 1e-9)
        steps = max(step - self._start_step, 1)
        rate = steps * self.images_per_step / elapsed
        eta = datetime.timedelta(seconds=int(elapsed / steps * (self.last_step - step)))
        parts = [f"step {step}/{self.last_step}"]
        parts += [f"{k} {v:.4g}" for k, v in {**self.means(), **self._notes}.items()]
        parts += [f"{rate:.1f} img/s", f"ETA {eta}"]
        self._start_step, self._window_start = step, time.monotonic()
        self._sums, self._counts, self._notes = {}, {}, {}
        return "  ".join(parts)

    def log(self, step):
        text = self.line(step)
        logging.info("%s", text)
        print(text, flush=True)
