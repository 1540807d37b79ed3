"""Benchmark request shapes for cedar-pdp, shared by the pytest benchmarks and load.py.

Four shapes, each with its expected decisions (worked out by hand from policies/, and
cross-checked against the engine by `python bench/scenario.py check`):

  check       Check: User::"bob" edit Document::"doc-1", context {}       -> ALLOW
              (attributes come from the bundle's base entities)
  batch       CheckBatch: principal User::"bob" at batch level, 40 items: 4 documents x their
              6 actions + 3 projects x their 5 actions + 1 report read     -> 18 ALLOW, 22 DENY
  check-ent   Check like `check`, but principal and resource are request entities
              (entities_json: User::"bench-bob" + Document::"bench-doc-00")  -> ALLOW
  batch-ent   CheckBatch: 1 request principal x 10 request documents x [read, edit, delete,
              share] = 40 items, the 11 entities given once at batch level -> 10 ALLOW

`check-ent` / `batch-ent` mirror the Cerbos anchor's shapes a / b
(/work/shared/bench/cerbos), where every principal and resource attribute travels in the
request; `check` / `batch` use the bundle's stored entities (the usual Cedar deployment).

  python bench/scenario.py write OUTDIR   # <shape>.bin (gRPC-framed body h2load posts),
                                          # <shape>.expected.json
  python bench/scenario.py check          # expectations == in-process engine decisions
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.grpc import convert
from pdp.model import CheckInput

SERVICE = "/pdp.v1.AuthorizationService"
ALLOW, DENY = "ALLOW", "DENY"


def uid(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def ent(type_: str, id_: str) -> dict[str, Any]:
    return {"__entity": uid(type_, id_)}


# ------------------------------------------------------------------ base-entity shapes --
# Expected decisions for User::"bob" (acme, engineering, eu, no roles), derived from
# policies/: doc-1 he edits; doc-2 he views (residency eu = his region); doc-3 and project
# apollo he owns (export is allowed: acme is on the enterprise tier); globex-* are another
# org; sales-crm has no role for him; the report is his department's.
DOC_ACTIONS = ["read", "comment", "edit", "export", "share", "delete"]
PROJECT_ACTIONS = ["read", "comment", "edit", "share", "delete"]
BATCH_BASE: list[tuple[str, str, str, str]] = (
    [
        ("Document", "doc-1", a, ALLOW if a in ("read", "comment", "edit", "export") else DENY)
        for a in DOC_ACTIONS
    ]
    + [("Document", "doc-2", a, ALLOW if a in ("read", "comment") else DENY) for a in DOC_ACTIONS]
    + [("Document", "doc-3", a, ALLOW) for a in DOC_ACTIONS]
    + [("Document", "globex-doc-1", a, DENY) for a in DOC_ACTIONS]
    + [("Project", "apollo", a, ALLOW) for a in PROJECT_ACTIONS]
    + [("Project", "sales-crm", a, DENY) for a in PROJECT_ACTIONS]
    + [("Project", "globex-web", a, DENY) for a in PROJECT_ACTIONS]
    + [("Report", "eng-metrics", "read", ALLOW)]
)
assert len(BATCH_BASE) == 40

# ------------------------------------------------------------- request-entity shapes --
BENCH_PRINCIPAL = {
    "uid": uid("User", "bench-bob"),
    "attrs": {
        "org": ent("Org", "acme"),
        "department": "engineering",
        "region": "eu",
        "suspended": False,
    },
    "parents": [],
}
ME = ent("User", "bench-bob")
BENCH_ACTIONS = ["read", "edit", "delete", "share"]


def _doc(
    i: int,
    org: str,
    *,
    owner: dict[str, Any] | None = None,
    editors: bool = False,
    viewers: bool = False,
    project: str = "apollo",
    residency: str | None = None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "org": ent("Org", org),
        "project": ent("Project", project),
        "owner": owner or ent("User", "carol"),
        "editors": [ME] if editors else [],
        "viewers": [ME] if viewers else [],
    }
    if residency is not None:
        attrs["residency"] = residency
    return {"uid": uid("Document", f"bench-doc-{i:02d}"), "attrs": attrs, "parents": []}


# (document, {action: expected}) -- a mix of outcomes, like the Cerbos anchor's ten documents.
_RW = {"read": ALLOW, "edit": ALLOW, "delete": DENY, "share": DENY}
_R = {"read": ALLOW, "edit": DENY, "delete": DENY, "share": DENY}
_ALL = dict.fromkeys(BENCH_ACTIONS, ALLOW)
_NONE = dict.fromkeys(BENCH_ACTIONS, DENY)
BENCH_DOCS: list[tuple[dict[str, Any], dict[str, str]]] = [
    (_doc(0, "acme", editors=True), _RW),  # editor
    (_doc(1, "acme", viewers=True), _R),  # viewer
    (_doc(2, "acme", owner=ME), _ALL),  # owner
    (_doc(3, "acme"), _NONE),  # no role
    (_doc(4, "acme", project="sales-crm"), _NONE),  # no role, other project
    (_doc(5, "acme", owner=ME, residency="us"), _NONE),  # owner, but pinned to us
    (_doc(6, "globex", owner=ME, project="globex-web"), _NONE),  # owner, but other org
    (_doc(7, "acme", editors=True, residency="eu"), _RW),  # editor, pinned to eu
    (_doc(8, "acme", viewers=True, project="sales-crm"), _R),  # viewer
    (_doc(9, "globex", editors=True, project="globex-web"), _NONE),  # editor, other org
]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# The default bundle (1.1.0) asks admins and sensitive actions for a second factor, a
# trusted device and a fresh, active session: every shape states them, as a stepped-up
# caller's PEP would, so the decisions stay those of the roles being measured.
CONTEXT_JSON = _json({"mfa": True, "device_trusted": True, "session_age": "20m", "idle": "2m"})
# The default bundle accepts no request entities; the `-ent` shapes are decided against
# the same policies with a manifest that lets requests supply users (in roles), projects
# and documents, the facts a Cerbos-style caller sends with every call (`bench_bundle_files`).
BENCH_TRUST = {
    "authoritative_types": ["Org", "Role", "Agent", "Report", "Invoice", "Customer", "Source"]
    + ["Tool"],
    "request_entities": {"User": {"parents": ["Role"]}, "Document": {}, "Project": {}},
}


def bench_bundle_files(files: Any) -> Any:
    """The default bundle's files with BENCH_TRUST in its manifest."""
    from pdp.bundle_files import BundleFiles

    manifest = {**json.loads(files.files["manifest.json"]), **BENCH_TRUST}
    return BundleFiles(files.source, {**files.files, "manifest.json": _json(manifest).encode()})


# ------------------------------------------------------------------------- shapes --
@dataclass(frozen=True)
class Shape:
    name: str
    method: str  # "Check" | "CheckBatch"
    message: Any  # pb.CheckRequest | pb.CheckBatchRequest
    expected: list[str]  # ALLOW/DENY per decision, in order

    @property
    def path(self) -> str:
        return f"{SERVICE}/{self.method}"

    @property
    def decisions(self) -> int:
        return len(self.expected)

    def body(self) -> bytes:
        """The gRPC-framed request body h2load posts."""
        return grpc_frame(self.message.SerializeToString(deterministic=True))

    def response_type(self) -> Any:
        return pb.CheckResponse if self.method == "Check" else pb.CheckBatchResponse

    def decode_decisions(self, message: bytes) -> list[str]:
        resp = self.response_type().FromString(message)
        results = [resp] if self.method == "Check" else list(resp.results)
        return [pb.Decision.Name(r.decision).removeprefix("DECISION_") for r in results]


def _euid(type_: str, id_: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=type_, id=id_)


def shape_check() -> Shape:
    msg = pb.CheckRequest(
        principal=_euid("User", "bob"),
        action=_euid("Action", "edit"),
        resource=_euid("Document", "doc-1"),
        context_json=CONTEXT_JSON,
    )
    return Shape("check", "Check", msg, [ALLOW])


def shape_batch() -> Shape:
    msg = pb.CheckBatchRequest(principal=_euid("User", "bob"), context_json=CONTEXT_JSON)
    for type_, id_, action, _ in BATCH_BASE:
        msg.items.add(action=_euid("Action", action), resource=_euid(type_, id_))
    return Shape("batch", "CheckBatch", msg, [e for *_, e in BATCH_BASE])


def shape_check_ent() -> Shape:
    doc, _ = BENCH_DOCS[0]
    msg = pb.CheckRequest(
        principal=_euid("User", "bench-bob"),
        action=_euid("Action", "edit"),
        resource=_euid("Document", "bench-doc-00"),
        entities_json=_json([BENCH_PRINCIPAL, doc]),
        context_json=CONTEXT_JSON,
    )
    return Shape("check-ent", "Check", msg, [ALLOW])


def shape_batch_ent() -> Shape:
    msg = pb.CheckBatchRequest(
        principal=_euid("User", "bench-bob"),
        entities_json=_json([BENCH_PRINCIPAL, *(d for d, _ in BENCH_DOCS)]),
        context_json=CONTEXT_JSON,
    )
    expected: list[str] = []
    for doc, outcome in BENCH_DOCS:
        for action in BENCH_ACTIONS:
            msg.items.add(
                action=_euid("Action", action), resource=_euid("Document", doc["uid"]["id"])
            )
            expected.append(outcome[action])
    return Shape("batch-ent", "CheckBatch", msg, expected)


SHAPES = {s.name: s for s in (shape_check(), shape_batch(), shape_check_ent(), shape_batch_ent())}


# ----------------------------------------------------- in-process (engine) inputs --
def check_inputs(shape: Shape) -> list[CheckInput]:
    """The shape's requests as engine inputs, converted exactly as the gRPC servicer does."""
    if shape.method == "Check":
        return [convert.check_input(shape.message)]
    return convert.batch_inputs(shape.message)


# -------------------------------------------------------------------- gRPC framing --
def grpc_frame(message: bytes) -> bytes:
    """5-byte gRPC prefix: flag 0 (uncompressed) + big-endian uint32 length."""
    return struct.pack(">BI", 0, len(message)) + message


def grpc_unframe(data: bytes) -> bytes:
    flag, length = struct.unpack(">BI", data[:5])
    if flag != 0 or len(data) != 5 + length:
        raise ValueError(f"bad gRPC frame: flag={flag} len={length} got={len(data) - 5}")
    return data[5:]


# --------------------------------------------------------------------------- CLI --
def _engine() -> Any:
    from pdp.bundle import compile_bundle
    from pdp.bundle_files import read_bundle_files
    from pdp.config import default_bundle
    from pdp.engine import Engine, Snapshot

    return Engine(
        Snapshot.of(
            {"default": compile_bundle(bench_bundle_files(read_bundle_files(default_bundle())))}
        )
    )


def engine_decisions(engine: Any, shape: Shape) -> list[str]:
    inputs = check_inputs(shape)
    results = (
        engine.check_batch("", inputs)
        if shape.method == "CheckBatch"
        else [engine.check("", inputs[0])]
    )
    return [r.decision.name for r in results]


def iter_write(outdir: Path) -> Iterator[str]:
    outdir.mkdir(parents=True, exist_ok=True)
    for s in SHAPES.values():
        body = s.body()
        (outdir / f"{s.name}.bin").write_bytes(body)
        (outdir / f"{s.name}.expected.json").write_text(json.dumps(s.expected) + "\n")
        yield (
            f"{s.name}: {s.method}, {len(body)} byte framed body, {s.decisions} decision(s), "
            f"{s.expected.count(ALLOW)} allow -> {outdir / (s.name + '.bin')}"
        )


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) == 2:
        for line in iter_write(Path(argv[1])):
            print(line)
        return 0
    if argv == ["check"]:
        engine, bad = _engine(), 0
        for s in SHAPES.values():
            got = engine_decisions(engine, s)
            ok = got == s.expected
            bad += not ok
            print(f"{s.name}: {'OK' if ok else 'MISMATCH'} ({got.count(ALLOW)}/{len(got)} allow)")
            if not ok:
                print(f"  got  {got}\n  want {s.expected}")
        return 1 if bad else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
