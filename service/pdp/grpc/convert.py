"""Convert between the wire types (pdp.v1) and the domain model, validating as it goes.

Every rejection names the request field it is about, e.g. `items[2].context.amount`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.config import Settings
from pdp.errors import InvalidRequest
from pdp.grpc import strict_json
from pdp.model import (
    TYPE_NAME,
    BundleVersion,
    CheckInput,
    CheckResult,
    Decision,
    EntityRef,
    RequestEntities,
    TokenPrincipal,
)

_EXTENSIONS = {"ipaddr": "ip", "decimal": "decimal", "datetime": "datetime", "duration": "duration"}
_MAX_DEPTH = 32  # nesting of sets/records; deeper values are refused, not recursed into
_WIRE_PER_JSON_BYTE = 8  # at most this many protobuf bytes per byte of a value's Cedar JSON
MAX_TENANT_BYTES = 128  # the longest name TENANT_NAME allows
_DECISIONS = {Decision.ALLOW: pb.DECISION_ALLOW, Decision.DENY: pb.DECISION_DENY}


def entity_ref(field: str, uid: vpb.EntityUid) -> EntityRef:
    type_ = uid.type  # each read of a protobuf field builds a new str
    if not type_:
        raise InvalidRequest(f"{field}.type", "must not be empty")
    if not TYPE_NAME.fullmatch(type_):
        raise InvalidRequest(f"{field}.type", f"{type_!r} is not a Cedar entity type name")
    return EntityRef(type_, uid.id)


def _required_ref(field: str, holder: Any, name: str) -> EntityRef:
    if not holder.HasField(name):
        raise InvalidRequest(field, "required")
    return entity_ref(field, getattr(holder, name))


def value(field: str, v: vpb.Value, depth: int = 0) -> Any:
    """A typed value as Cedar JSON, with explicit escapes so no schema is needed to read it."""
    if depth > _MAX_DEPTH:
        raise InvalidRequest(field, f"nested deeper than {_MAX_DEPTH} levels")
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidRequest(field, "value has no type set")
    if kind == "bool":
        return v.bool
    if kind == "long":
        return v.long
    if kind == "string":
        return v.string
    if kind == "set":
        return [value(f"{field}[{i}]", x, depth + 1) for i, x in enumerate(v.set.values)]
    if kind == "record":
        return record(field, v.record.fields, depth + 1)
    if kind == "entity":
        return {"__entity": entity_ref(field, v.entity).as_cedar()}
    return {"__extn": {"fn": _EXTENSIONS[kind], "arg": getattr(v, kind)}}


def record(field: str, fields: Mapping[str, vpb.Value], depth: int = 0) -> dict[str, Any]:
    return {k: value(f"{field}.{k}", fields[k], depth) for k in sorted(fields)}


@dataclass(frozen=True)
class Limits:
    """Content caps of one request: the `Settings` of the same names."""

    max_request_entities: int
    max_request_entity_parents: int
    max_context_bytes: int
    max_batch_context_bytes: int
    max_context_depth: int
    max_id_bytes: int
    max_string_bytes: int

    @staticmethod
    def of(settings: Settings) -> Limits:
        return Limits(**{f.name: getattr(settings, f.name) for f in fields(Limits)})


DEFAULT_LIMITS = Limits(**{f.name: Settings.model_fields[f.name].default for f in fields(Limits)})


def context(
    field: str, typed: Mapping[str, vpb.Value], text: str, limits: Limits = DEFAULT_LIMITS
) -> str | None:
    """The context as Cedar JSON text, or None when neither form is set (so a batch default
    applies). Cedar parses the text itself, with the schema; this only bounds it."""
    if typed and text:
        raise InvalidRequest(field, "set either context or context_json, not both")
    if text:
        name = f"{field}_json"
        _cap_bytes(name, utf8_size(text), limits.max_context_bytes)
        parsed = strict_json.loads(name, text, limits.max_context_depth)
        if not isinstance(parsed, dict):
            raise InvalidRequest(name, "must be a JSON object (a Cedar record)")
        _cap_strings(name, text, parsed, limits)
        return text  # cedarpy parses it again with the schema; pass the text through
    if typed:
        # Converting costs microseconds a value: refuse what cannot fit before converting
        # it. Cedar JSON is never under an eighth of the protobuf size (the densest value,
        # a negative long in a set, is 13 bytes of protobuf for the 3 of `-1,`).
        wire = sum(len(k) + v.ByteSize() for k, v in typed.items())
        if wire > _WIRE_PER_JSON_BYTE * limits.max_context_bytes:
            raise InvalidRequest(
                field,
                f"{wire} bytes of protobuf: its JSON exceeds the limit of "
                f"{limits.max_context_bytes}",
            )
        converted = record(field, typed)
        # One serialisation, shared by every batch item that uses this context.
        out = json.dumps(converted, separators=(",", ":"))
        _cap_bytes(field, len(out), limits.max_context_bytes)  # dumps escapes to ASCII
        if strict_json.depth(converted) > limits.max_context_depth:
            raise InvalidRequest(field, f"nested deeper than {limits.max_context_depth} levels")
        _cap_strings(field, out, converted, limits)
        return out
    return None


def _cap_strings(field: str, text: str, value: Any, limits: Limits) -> None:
    """Refuse a string of `value` (whose JSON is `text`) over `max_string_bytes`, or an
    entity type or id over `max_id_bytes`. The usual request has no long string at all,
    which a search of the text shows at a fraction of the cost of walking the value."""
    if strict_json.may_hold_longer(text, min(limits.max_string_bytes, limits.max_id_bytes)):
        strict_json.check_strings(field, value, limits.max_string_bytes, limits.max_id_bytes)


def _capped(field: str, ref: EntityRef, limits: Limits) -> EntityRef:
    """`ref`, unless its type or id is longer than `max_id_bytes`."""
    for part, text in (("type", ref.type), ("id", ref.id)):
        size = utf8_size(text)
        if size > limits.max_id_bytes:
            raise InvalidRequest(
                f"{field}.{part}",
                f"{size} bytes exceed the limit of {limits.max_id_bytes} (max_id_bytes)",
            )
    return ref


def cap_tenant(tenant: str) -> None:
    # No tenant can be served under a longer name (TENANT_NAME): refused before any lookup.
    size = utf8_size(tenant)
    if size > MAX_TENANT_BYTES:
        raise InvalidRequest(
            "tenant", f"{size} bytes exceed the limit of {MAX_TENANT_BYTES} (a tenant's name)"
        )


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _cap_bytes(field: str, size: int, limit: int) -> None:
    if size > limit:
        raise InvalidRequest(field, f"{size} bytes exceed the limit of {limit}")


def entities(
    field: str, typed: Sequence[vpb.Entity], text: str, limits: Limits = DEFAULT_LIMITS
) -> RequestEntities | None:
    """Request entities as Cedar JSON, or None when none are given."""
    if not typed and not text:
        return None  # the usual case, without the caps' walks over nothing
    cap = limits.max_request_entities
    if len(typed) > cap:
        raise InvalidRequest(field, f"{len(typed)} entities exceed the limit of {cap}")
    _cap_parents(field, typed, [], limits.max_request_entity_parents)
    items: list[Any] = [_entity(f"{field}[{i}]", e) for i, e in enumerate(typed)]
    if text:
        name = f"{field}_json"
        # No depth walk here (a third of the parse's cost): Cedar refuses entities nested
        # past its own limit, and the parser's recursion limit bounds the work before that.
        parsed = strict_json.loads(name, text, None)
        if not isinstance(parsed, list):
            raise InvalidRequest(name, "must be a JSON list of Cedar entities")
        if len(items) + len(parsed) > cap:
            count = len(items) + len(parsed)
            raise InvalidRequest(name, f"{count} entities (with {field}) exceed the limit of {cap}")
        _cap_parents(name, typed, parsed, limits.max_request_entity_parents)
        _cap_strings(name, text, parsed, limits)
        if not items:
            return RequestEntities(text, parsed)
        items += parsed
    if not items:
        return None
    out = json.dumps(items[: len(typed)], separators=(",", ":"))
    _cap_strings(field, out, items[: len(typed)], limits)
    if len(items) > len(typed):  # with entities_json: one text of both
        out = json.dumps(items, separators=(",", ":"))
    return RequestEntities(out, items)


def _cap_parents(field: str, typed: Sequence[vpb.Entity], parsed: list[Any], cap: int) -> None:
    """Refuse more parent references than `cap` before Cedar computes their ancestry."""
    count = sum(len(e.parents) for e in typed)
    for e in parsed:
        parents = e.get("parents") if isinstance(e, dict) else None
        count += len(parents) if isinstance(parents, list) else 0
    if count > cap:
        raise InvalidRequest(field, f"{count} parent references exceed the limit of {cap}")


def _entity(field: str, e: vpb.Entity) -> dict[str, Any]:
    return {
        "uid": _required_ref(f"{field}.uid", e, "uid").as_cedar(),
        "attrs": record(f"{field}.attrs", e.attrs),
        "parents": [
            entity_ref(f"{field}.parents[{i}]", p).as_cedar() for i, p in enumerate(e.parents)
        ],
        "tags": record(f"{field}.tags", e.tags),
    }


def bypass_cache(req: pb.CheckRequest | pb.CheckBatchRequest) -> bool:
    """Does the request ask for a fresh evaluation (`CONSISTENCY_HIGHER_CONSISTENCY`)?"""
    return req.consistency == pb.CONSISTENCY_HIGHER_CONSISTENCY


def check_input(
    req: pb.CheckRequest, limits: Limits = DEFAULT_LIMITS, token: TokenPrincipal | None = None
) -> CheckInput:
    """The request as the engine takes it; `token` is the principal its token named (the
    servicer validated it), which then stands for `principal`."""
    cap_tenant(req.tenant)
    ctx = context("context", req.context, req.context_json, limits)
    principal = token.uid if token else _required_ref("principal", req, "principal")
    return CheckInput(
        principal=_capped("principal", principal, limits),
        action=_capped("action", _required_ref("action", req, "action"), limits),
        resource=_capped("resource", _required_ref("resource", req, "resource"), limits),
        context="{}" if ctx is None else ctx,
        entities=_with_token(entities("entities", req.entities, req.entities_json, limits), token),
    )


def _with_token(
    ents: RequestEntities | None, token: TokenPrincipal | None
) -> RequestEntities | None:
    """The request entities with the token's principal beside them (`pdp.trust` decides
    whether its entity is added)."""
    if token is None:
        return ents
    if ents is None:
        return RequestEntities("[]", [], token)
    return replace(ents, token=token)


def batch_inputs(
    req: pb.CheckBatchRequest, limits: Limits = DEFAULT_LIMITS, token: TokenPrincipal | None = None
) -> list[CheckInput]:
    """Items with the batch-level principal, context and entities filled in where unset;
    with a `token`, its principal is every item's and no item may name another."""
    cap_tenant(req.tenant)
    principal = entity_ref("principal", req.principal) if req.HasField("principal") else None
    if token is not None:
        principal = token.uid
    if principal is not None:
        _capped("principal", principal, limits)
    ctx = context("context", req.context, req.context_json, limits)
    # Items without entities of their own share the batch's (one parse for all of them).
    shared_ents = _with_token(entities("entities", req.entities, req.entities_json, limits), token)
    out: list[CheckInput] = []
    shared_ctx = ctx if ctx is not None else "{}"
    shared_size = utf8_size(shared_ctx)
    context_bytes = 0  # as Cedar parses them: a shared context once per item using it
    refs = _Refs(limits)
    for i, item in enumerate(req.items):
        # Field names are built only for an error: the usual item costs none of them.
        if item.HasField("principal"):
            if token is not None:
                raise InvalidRequest(
                    f"items[{i}].principal", "set with token: the token names the principal"
                )
            item_principal = refs.of(i, "principal", item.principal)
        elif principal is not None:
            item_principal = principal
        else:
            raise InvalidRequest(
                f"items[{i}].principal", "required (no batch-level principal either)"
            )
        typed, text = item.context, item.context_json
        if typed or text:
            item_ctx = context(f"items[{i}].context", typed, text, limits)
            used = shared_ctx if item_ctx is None else item_ctx
            context_bytes += utf8_size(used)
        else:
            used = shared_ctx
            context_bytes += shared_size
        if context_bytes > limits.max_batch_context_bytes:
            raise InvalidRequest(
                "items",
                f"contexts of items[0..{i}] total {context_bytes} bytes (a batch-level context "
                f"counts once per item using it), over the limit of "
                f"{limits.max_batch_context_bytes}",
            )
        ents = shared_ents
        typed_ents, ents_text = item.entities, item.entities_json
        if typed_ents or ents_text:
            own = entities(f"items[{i}].entities", typed_ents, ents_text, limits)
            ents = shared_ents if own is None else _with_token(own, token)
        action = refs.required(i, "action", item)
        resource = refs.required(i, "resource", item)
        out.append(CheckInput(item_principal, action, resource, used, ents))
    return out


class _Refs:
    """The entity uids of one batch's items, each checked (type name, `max_id_bytes`) and
    built once: a batch names the same few actions and resources again and again."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._seen: dict[tuple[str, str], EntityRef] = {}

    def required(
        self, i: int, part: Literal["action", "resource"], item: pb.BatchItem
    ) -> EntityRef:
        if not item.HasField(part):
            raise InvalidRequest(f"items[{i}].{part}", "required")
        return self.of(i, part, getattr(item, part))

    def of(self, i: int, part: str, uid: vpb.EntityUid) -> EntityRef:
        key = (uid.type, uid.id)
        found = self._seen.get(key)
        if found is None:
            field = f"items[{i}].{part}"
            found = self._seen[key] = _capped(field, entity_ref(field, uid), self._limits)
        return found


def batch_error_field(req: pb.CheckBatchRequest, exc: InvalidRequest) -> InvalidRequest:
    """Name an engine error by the field that caused it: the item's, or the batch default's."""
    if exc.index is None:
        return exc
    item = req.items[exc.index]
    own = {
        "principal": item.HasField("principal"),
        "context": bool(item.context or item.context_json),
        "entities": bool(item.entities or item.entities_json),
    }
    root = re.split(r"[.\[]", exc.field, maxsplit=1)[0]  # entities[0].parents[1] -> entities
    if own.get(root, True):
        return exc.within(f"items[{exc.index}]")
    return exc


@functools.lru_cache(maxsize=256)
def _policy_version(v: BundleVersion) -> pb.PolicyVersion:
    """One message per bundle version, built once: a response copies it (never mutated)."""
    return pb.PolicyVersion(bundle=v.name, version=v.version, digest=v.digest)


def check_response(result: CheckResult) -> pb.CheckResponse:
    if result.cache_hit and not result.errors and not result.reason:
        # A hit repeats a stored answer: copy its message, built once, and set the id
        # (a fifth of the cost of building it field by field). Only answers without
        # errors: an error message can quote a caller's values, and the templates are
        # then keyed by nothing a caller sends (policy ids, bundle and data versions).
        response = pb.CheckResponse()
        response.CopyFrom(
            _hit_template(
                result.decision,
                tuple(result.determining_policies),
                result.version,
                result.data_version,
            )
        )
        response.decision_id = result.decision_id
        return response
    return _build_response(result)


@functools.lru_cache(maxsize=1024)
def _hit_template(
    decision: Decision,
    determining_policies: tuple[str, ...],
    version: BundleVersion,
    data_version: int,
) -> pb.CheckResponse:
    """The response of an error-free cache hit without its decision id; never mutated."""
    return _build_response(
        CheckResult(
            decision,
            determining_policies,
            (),
            version,
            "",
            cache_hit=True,
            data_version=data_version,
        )
    )


def _build_response(result: CheckResult) -> pb.CheckResponse:
    msg = pb.CheckResponse(
        decision=_DECISIONS[result.decision],
        determining_policies=result.determining_policies,
        policy_version=_policy_version(result.version),
        decision_id=result.decision_id,
    )
    # The fields below are usually at their defaults: set only when not (each set costs).
    if result.errors:
        msg.errors.extend(
            pb.PolicyError(policy_id=e.policy_id, message=e.message) for e in result.errors
        )
    if result.cache_hit:
        msg.cache_hit = True
    if result.data_version:
        msg.data_version = result.data_version
    if result.reason:
        msg.reason = result.reason
    return msg
