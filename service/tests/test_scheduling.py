"""`sched_batch`: with it on, every thread of a serving process runs under SCHED_BATCH
(threads started after start-up too, as they take their creator's policy); off (the
default), none does; a policy the operator chose is kept either way."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pdp._proto.v1 import authorization_pb2 as pb

from .grpc.test_limits import check
from .support import DOCS_BUNDLE, running_server

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH") or not Path("/proc/self/task").is_dir(),
    reason="SCHED_BATCH is Linux's",
)


def policies(pid: int) -> dict[str, int]:
    """Each thread's scheduling policy, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[task.name] = os.sched_getscheduler(int(task.name))
        except ProcessLookupError:
            continue
    return out


# Execs its arguments under SCHED_IDLE, as `chrt -i 0` would (util-linux's chrt may be absent).
AS_IDLE = [
    sys.executable,
    "-c",
    "import os, sys; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
]


def serve_and_call(
    args: list[str], env: dict[str, str] | None = None, wrap: list[str] | None = None
) -> dict[str, int]:
    base = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]
    with running_server(base + args, env, wrap=wrap or []) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        # Calls in flight at once start pool threads after start-up.
        answers = [stub.Check.future(check(), timeout=10) for _ in range(12)]
        assert all(a.result().decision == pb.DECISION_ALLOW for a in answers)
        return policies(srv.proc.pid)


@pytest.mark.parametrize(
    ("args", "env"), [(["--sched-batch"], None), ([], {"PDP_SCHED_BATCH": "true"})]
)
def test_with_sched_batch_on_every_thread_of_the_server_runs_under_it(
    args: list[str], env: dict[str, str] | None
) -> None:
    got = serve_and_call(args, env)
    assert len(got) >= 8, got  # grpc's, the pool's, the event loop's: not only the main one
    assert set(got.values()) == {os.SCHED_BATCH}, got


@pytest.mark.parametrize("args", [[], ["--no-sched-batch"]])
def test_by_default_or_off_every_thread_keeps_the_default_policy(args: list[str]) -> None:
    got = serve_and_call(args)
    assert set(got.values()) == {os.SCHED_OTHER}, got


def test_a_policy_the_operator_chose_is_kept() -> None:
    """`chrt -i 0 pdp serve --sched-batch`: SCHED_IDLE stays (an unprivileged process
    could not even leave it)."""
    got = serve_and_call(["--sched-batch"], wrap=AS_IDLE)
    assert len(got) >= 8, got
    assert set(got.values()) == {os.SCHED_IDLE}, got
