"""Timing helper shared by the bench scripts (standard library only)."""

import time


def median_seconds(fn, runs, warmup=2):
    """Median wall seconds of `fn()` over `runs` calls after `warmup` untimed ones.

    `fn` must block until its result is ready (e.g. `.block_until_ready()`, `.numpy()`,
    `torch.cuda.synchronize()`); the median keeps a short load spike from deciding it.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
