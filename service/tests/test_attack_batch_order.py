"""Attacks on the batch path's error attribution (one `evaluate` of the whole batch)."""

from __future__ import annotations

import json

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb

from .test_batch_parse import ITEMS, user


def test_a_batch_with_two_bad_items_names_the_first(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    # evaluate() now decides group by group (items sharing request entities), each group
    # whole, instead of slice by slice in item order: an item of the first group is
    # reported before an earlier item of a later group. Here item 1 (its own entities are of
    # a type requests may not supply) and item 20 (a context the schema refuses) are both bad;
    # the error names items[20], though items[1] comes first (as it did when the first
    # slice of 8 was decided first), and whichever item a client fixes first, the
    # other is then reported: the one named depends on how the batch happens to group.
    ref = vpb.EntityUid
    refused = [{"uid": {"type": "Tag", "id": "t"}, "attrs": {}, "parents": []}]  # not allowed
    req = pb.CheckBatchRequest(
        tenant="docs",
        principal=ref(type="User", id="newcomer"),
        items=[
            pb.BatchItem(
                action=ref(type="Action", id="read"), resource=ref(type="Document", id="doc1")
            )
            for _ in range(ITEMS)
        ],
        entities_json=json.dumps([user("newcomer", "acme", 0)]),
    )
    req.items[1].entities_json = json.dumps(refused)
    req.items[20].context_json = '{"mfa": 3}'
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckBatch(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(err.value.details())
    assert details.startswith("items[1].entities"), details
