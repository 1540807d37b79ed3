"""The server's threads under Linux's SCHED_BATCH policy: no preemption on wake-up.

Every call moves between grpcio's poll thread and a pool thread two or three times, and
cedarpy holds the GIL while it decides. Under the default policy a thread woken by a
message preempts the one running, which usually holds the GIL: the woken thread runs only
to find the GIL taken and sleeps again, two context switches for nothing. SCHED_BATCH
keeps the kernel from preempting on wake-up (the woken thread runs when the running one
blocks or its slice ends); it is not a real-time policy, needs no privilege, and keeps the
nice value. Measured on one pinned core (bench/RESULTS.md, 2026-12-04): context switches
per cache hit 7.4 -> 3.2 and 18-27 % more hits per second. Off by default: the same rule
makes a woken thread wait for the time slice of any other busy process on its core (p50
~4 ms instead of ~0.8 ms beside a CPU-bound neighbour), so it is for servers whose cores
are their own.

The policy is per thread on Linux, and a new thread takes its creator's: setting it on
every thread the process has (`/proc/self/task`) covers the threads started later too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TASKS = Path("/proc/self/task")


def batch_scheduling() -> bool:
    """Put every thread of this process that runs under the default policy (SCHED_OTHER)
    under SCHED_BATCH; a policy the operator chose (`chrt -i`, `chrt -f`) is left as it
    is. False (logged) where the platform has no such policy or refuses it: those
    threads then keep their policy."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not TASKS.is_dir():
        log.info("SCHED_BATCH is not available here: threads keep their policy")
        return False
    param = os.sched_param(0)  # SCHED_BATCH's only priority
    try:
        for task in TASKS.iterdir():
            try:
                tid = int(task.name)
                if os.sched_getscheduler(tid) == os.SCHED_OTHER:
                    os.sched_setscheduler(tid, policy, param)
            except ProcessLookupError:  # a thread that ended meanwhile
                continue
    except OSError as exc:  # e.g. a seccomp profile that forbids sched_setscheduler
        log.warning("cannot set SCHED_BATCH (%s): threads keep their policy", exc)
        return False
    return True
