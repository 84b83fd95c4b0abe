"""Preemption: a SIGTERM (a cluster's preemption notice) or SIGINT (Ctrl-C) during training
lets the current step finish; the trainer then saves a checkpoint at that step and stops
with `Preempted` (train.py exits with PREEMPTED_EXIT), so that re-running resumes there.

A second SIGINT interrupts at once (KeyboardInterrupt), for a step that hangs.
"""

import contextlib
import signal
import threading

PREEMPTED_EXIT = 75          # EX_TEMPFAIL: "try again", which job schedulers may requeue on
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint at `step`."""

    def __init__(self, message, step, checkpoint):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


class StopRequest:
    """The name of the first stop signal received (None until then); truthy once stopped."""

    def __init__(self):
        self.signal_name = None

    def __bool__(self):
        return self.signal_name is not None

    def handle(self, signum, frame):
        del frame
        if self and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = self.signal_name or signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals():
    """A StopRequest that SIGTERM and SIGINT set while the block runs (the previous handlers
    come back after it). Outside the main thread, where Python cannot take signals, it
    stays unset."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request.handle) for number in SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
