"""Job kinds used only by the tests (the worker imports this module through EXTRA_JOB_TASK_MODULES)."""

import time

from studies.jobs import task


@task("test.sleep")
def sleep(*, seconds, progress):
    progress(0.1, "sleeping")
    time.sleep(seconds)
    return {"slept": seconds}


@task("test.fail")
def fail(*, progress):
    raise RuntimeError("this job always fails")
