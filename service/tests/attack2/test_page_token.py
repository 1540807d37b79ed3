"""attack2: a List page token is decoded with `json.loads`, catching ValueError and
TypeError only (`pdp.entity_store.sql._decode_token`): a token that is base64 of deeply
nested JSON raises RecursionError and the call ends INTERNAL ("unexpected error") instead
of INVALID_ARGUMENT naming `page_token`."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import pytest

from pdp._proto.v1 import entity_pb2 as epb

from ..entity.support import refusal, store_server


@pytest.mark.parametrize("nested", ["[" * 100_000, '{"a":' * 100_000])
def test_a_nested_page_token_is_invalid_argument(tmp_path: Path, nested: str) -> None:
    token = base64.urlsafe_b64encode(nested.encode()).decode()
    with store_server(tmp_path) as (_, _checks, entities):
        code, details = refusal(entities.List, epb.ListEntitiesRequest(page_token=token))
        assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
