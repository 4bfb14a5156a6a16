"""The benchmarks' one timer: median wall time of repeated runs, measured in the same process."""

import statistics
import time


def median_time(fn, repeats=3):
    """Run ``fn()`` ``repeats`` times.

    Returns
    -------
    (median seconds, list of seconds per run, result of the last run)
        Each run's result is released before the next run starts, so peak memory holds one result.
    """
    times, result = [], None
    for _ in range(repeats):
        result = None
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result
