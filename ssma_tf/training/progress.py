"""The progress line: step, loss, learning rate, images/s and ETA every skip_step steps."""

import datetime
import time

from absl import logging


class Progress:
    """Averages logged scalars over a window and formats one line per window."""

    def __init__(self, first_step, last_step, images_per_step):
        self.last_step = last_step
        self.images_per_step = images_per_step
        self._start_step = first_step
        self._window_start = time.monotonic()
        self._sums, self._count = {}, 0

    def update(self, values):
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def line(self, step):
        """Formatted line for the window ending at `step`; resets the window."""
        elapsed = max(time.monotonic() - self._window_start, 1e-9)
        steps = max(step - self._start_step, 1)
        rate = steps * self.images_per_step / elapsed
        eta = datetime.timedelta(seconds=int(elapsed / steps * (self.last_step - step)))
        means = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        parts = [f"step {step}/{self.last_step}"]
        parts += [f"{k} {v:.4g}" for k, v in means.items()]
        parts += [f"{rate:.1f} img/s", f"ETA {eta}"]
        self._start_step, self._window_start = step, time.monotonic()
        self._sums, self._count = {}, 0
        return "  ".join(parts)

    def log(self, step):
        text = self.line(step)
        logging.info("%s", text)
        print(text, flush=True)
