"""`pdp check`: one decision, in-process against a bundle or from a running server.

Both paths send the same `CheckRequest` through the same converters as the server.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import load_bundle
from pdp.config import default_bundle
from pdp.engine import Engine, Snapshot
from pdp.errors import InvalidRequest, PdpError
from pdp.grpc import convert
from pdp.model import DEFAULT_TENANT

_UID = re.compile(r'(?P<type>.+?)::"(?P<id>(?:[^"\\]|\\.)*)"', re.S)
_DECISION_NAMES = {pb.DECISION_ALLOW: "ALLOW", pb.DECISION_DENY: "DENY"}


def parse_uid(field: str, text: str) -> vpb.EntityUid:
    """`Type::"id"` in Cedar syntax (quotes and backslashes escaped with `\\`)."""
    m = _UID.fullmatch(text.strip())
    if m is None:
        raise InvalidRequest(field, f'{text!r} is not an entity uid like User::"alice"')
    return vpb.EntityUid(type=m["type"], id=re.sub(r"\\(.)", r"\1", m["id"]))


def build_request(args: argparse.Namespace) -> pb.CheckRequest:
    entities = args.entities
    if entities.startswith("@"):
        entities = Path(entities[1:]).read_text()
    return pb.CheckRequest(
        tenant=args.tenant,
        principal=parse_uid("principal", args.principal),
        action=parse_uid("action", args.action),
        resource=parse_uid("resource", args.resource),
        context_json=args.context,
        entities_json=entities,
    )


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    request = build_request(args)
    if args.server:
        with grpc.insecure_channel(args.server) as channel:
            try:
                response = pb_grpc.AuthorizationServiceStub(channel).Check(request, timeout=10)
            except grpc.RpcError as exc:
                raise PdpError(f"{exc.code().name}: {exc.details()}") from exc
    else:
        bundle = load_bundle(args.bundle or default_bundle())
        engine = Engine(Snapshot.of({request.tenant or DEFAULT_TENANT: bundle}))
        response = convert.check_response(
            engine.check(request.tenant, convert.check_input(request))
        )
    return response_dict(response)


def response_dict(r: pb.CheckResponse) -> dict[str, Any]:
    return {
        "decision": _DECISION_NAMES.get(r.decision, "DENY"),
        "determining_policies": list(r.determining_policies),
        "errors": [{"policy_id": e.policy_id, "message": e.message} for e in r.errors],
        "policy_version": {
            "bundle": r.policy_version.bundle,
            "version": r.policy_version.version,
            "digest": r.policy_version.digest,
        },
        "decision_id": r.decision_id,
        "reason": r.reason,  # why a Deny was forced without the policies ("" if they decided)
    }
