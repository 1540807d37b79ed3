"""attack2: a kill switch file that cannot be parsed must kill the whole PDP. JSON nested
deeper than Python's recursion limit (well under the 1 MiB cap) raises RecursionError,
which `pdp.kill_switch._read` does not catch: the poll logs it and goes on, but the file's
stat was recorded before the read, so the file is never read again and the switch stays
off (fail open) for as long as that file exists."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..admin.support import bob_edits, serve_args, token_config
from ..admin.test_kill_switch import write_flag
from ..support import running_server


@pytest.mark.parametrize("text", ["[" * 200_000, '{"a":' * 200_000])
def test_a_deeply_nested_kill_file_denies_everything(tmp_path: Path, text: str) -> None:
    flag = tmp_path / "KILL"
    cfg = token_config(tmp_path)
    args = [*serve_args(cfg), "--admin-listen", "off", "--kill-switch-file", str(flag)]
    with running_server(args) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        assert stub.Check(bob_edits(), timeout=10).decision == pb.DECISION_ALLOW
        write_flag(flag, text)
        deadline = time.monotonic() + 5  # polled every 100 ms
        decision = pb.DECISION_ALLOW
        while time.monotonic() < deadline:
            decision = stub.Check(bob_edits(), timeout=10).decision
            if decision == pb.DECISION_DENY:
                break
            time.sleep(0.1)
        assert decision == pb.DECISION_DENY, "the kill file exists but decisions Allow"
