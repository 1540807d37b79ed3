"""The decision cache against the real server: hits reported, bypass, reload."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb

from ..support import DOCS_BUNDLE, running_server

ALICE_EDIT = dict(
    tenant="live",
    principal=vpb.EntityUid(type="User", id="alice"),
    action=vpb.EntityUid(type="Action", id="edit"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)
LOCKDOWN = '@id("lockdown")\nforbid(principal, action, resource);\n'


def typed(**kw: bool) -> dict[str, vpb.Value]:
    return {k: vpb.Value(bool=v) for k, v in kw.items()}


@pytest.fixture
def live(tmp_path: Path) -> Path:
    bundle = tmp_path / "live"
    shutil.copytree(DOCS_BUNDLE, bundle)
    return bundle


def test_hits_bypass_and_a_reload_that_changes_the_answer_at_once(live: Path) -> None:
    with running_server(["--bundle", f"live={live}", "--no-watch"]) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        first = stub.Check(pb.CheckRequest(**ALICE_EDIT, context_json='{"mfa": true}'))
        # The same context typed: one key, so a hit, with its own decision id.
        hit = stub.Check(pb.CheckRequest(**ALICE_EDIT, context=typed(mfa=True)))
        assert first.decision == hit.decision == pb.DECISION_ALLOW
        assert (first.cache_hit, hit.cache_hit) == (False, True)
        assert first.decision_id != hit.decision_id
        assert list(hit.determining_policies) == list(first.determining_policies)
        bypass = pb.CONSISTENCY_HIGHER_CONSISTENCY
        fresh = stub.Check(
            pb.CheckRequest(**ALICE_EDIT, context=typed(mfa=True), consistency=bypass)
        )
        assert not fresh.cache_hit and fresh.decision == pb.DECISION_ALLOW
        batch = stub.CheckBatch(
            pb.CheckBatchRequest(
                tenant="live",
                principal=ALICE_EDIT["principal"],
                context_json='{"mfa": true}',
                items=[pb.BatchItem(action=ALICE_EDIT["action"], resource=ALICE_EDIT["resource"])]
                * 2,
            )
        )
        assert [r.cache_hit for r in batch.results] == [True, True]

        (live / "rules" / "lockdown.cedar").write_text(LOCKDOWN)
        (live / "manifest.json").write_text(
            json.dumps({**json.loads((live / "manifest.json").read_text()), "version": "2"})
        )
        mark = len(srv.lines)
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for_log(r"serving bundle docs version 2 ", start=mark)
        after = stub.Check(pb.CheckRequest(**ALICE_EDIT, context_json='{"mfa": true}'))
        assert after.policy_version.version == "2" and not after.cache_hit
        assert after.decision == pb.DECISION_DENY and list(after.determining_policies) == [
            "lockdown"
        ]
        again = stub.Check(pb.CheckRequest(**ALICE_EDIT, context=typed(mfa=True)))
        assert again.cache_hit and again.decision == pb.DECISION_DENY


def test_with_the_cache_off_nothing_is_a_hit(live: Path) -> None:
    args = ["--bundle", f"live={live}", "--no-watch", "--no-decision-cache"]
    with running_server(args) as srv, srv.channel() as ch:
        stub = srv.stub(ch)
        answers = [stub.Check(pb.CheckRequest(**ALICE_EDIT)) for _ in range(3)]
        assert [a.cache_hit for a in answers] == [False] * 3
        assert len({a.decision_id for a in answers}) == 3
