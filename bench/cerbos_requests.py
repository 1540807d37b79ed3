#!/usr/bin/env python3
"""The Cerbos anchor's request shapes a and b, for cedar-pdp's own gRPC API (pdp.v1).

    .venv/bin/python bench/cerbos_requests.py write [OUTDIR]  # default bench/cerbos-requests/
    .venv/bin/python bench/cerbos_requests.py check           # decisions == the anchor's, and
                                                              # bench/cerbos-requests/ up to date

Per shape: `<shape>.bin` (the gRPC-framed body h2load posts), `<shape>.json` (the same
request as protobuf JSON, for reading), `<shape>.expected.json` (its decisions).

The logical requests are the anchor's own: its `scenario.py` (CERBOS_DIR, default
/work/shared/bench/cerbos) is imported at run time, so the principal (bob: roles, org,
department, clearance) and the ten documents cannot drift from what Cerbos is sent.
Every attribute travels in the request, as with Cerbos, as typed request entities (the
bundle bench/cerbos-scenario declares User and Document in `request_entities`):

  a  Check: User::"bob" edit Document::"doc-00"; entities [bob, doc-00]   -> ALLOW
  b  CheckBatch: principal User::"bob" and the 11 entities once, at batch level; 40 items,
     doc-00 ... doc-09 x [read, edit, delete, share] in the anchor's order -> 12 ALLOW

Expected decisions: each body is decoded, converted as the servicer converts it and decided
in process by the engine against bench/cerbos-scenario (the bundle whose suite pins the
anchor suite's 156 decisions). `write` and `check` fail unless the result equals the
anchor's requests/{a,b}.expected.json cell for cell. `<shape>.expected.json` is written in
the anchor's form, {resource id: {action: "ALLOW" | "DENY"}}.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenario  # noqa: E402  (bench/scenario.py: Shape, framing, engine helpers)

from pdp._proto.v1 import authorization_pb2 as pb  # noqa: E402
from pdp._proto.v1 import value_pb2 as vpb  # noqa: E402

CERBOS_DIR = Path(os.environ.get("CERBOS_DIR", "/work/shared/bench/cerbos"))
BUNDLE = HERE / "cerbos-scenario"
REQUESTS = HERE / "cerbos-requests"
_EFFECTS = {"EFFECT_ALLOW": scenario.ALLOW, "EFFECT_DENY": scenario.DENY}


@cache
def anchor() -> ModuleType:
    """The anchor's scenario.py, under another name (bench/scenario.py is `scenario`)."""
    spec = importlib.util.spec_from_file_location("cerbos_scenario", CERBOS_DIR / "scenario.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cerbos_requests: cannot import {CERBOS_DIR / 'scenario.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(v: Any) -> vpb.Value:
    # bool before int: True is an int in Python. Cerbos carries numbers as doubles (its
    # choice 6); the scenario's are whole, and Cedar's are longs.
    if isinstance(v, bool):
        return vpb.Value(bool=v)
    if isinstance(v, int):
        return vpb.Value(long=v)
    if isinstance(v, str):
        return vpb.Value(string=v)
    if isinstance(v, list):
        return vpb.Value(set=vpb.SetValue(values=[_value(x) for x in v]))
    raise TypeError(f"unsupported attribute value {v!r}")


def _uid(type_: str, id_: str) -> vpb.EntityUid:
    return vpb.EntityUid(type=type_, id=id_)


def principal_entity(p: dict[str, Any]) -> vpb.Entity:
    attrs = {k: _value(v) for k, v in p["attr"].items()}
    attrs["roles"] = _value(list(p["roles"]))
    return vpb.Entity(uid=_uid("User", p["id"]), attrs=attrs)


def document_entity(r: dict[str, Any]) -> vpb.Entity:
    attrs = {k: _value(v) for k, v in r["attr"].items() if k != "owner"}
    # Cerbos's owner is a principal id; here it is the principal itself.
    attrs["owner"] = vpb.Value(entity=_uid("User", r["attr"]["owner"]))
    return vpb.Entity(uid=_uid("Document", r["id"]), attrs=attrs)


def cells(shape: dict[str, Any]) -> list[tuple[str, str]]:
    """(resource id, action) per decision, in the anchor's request order."""
    return [(r["id"], a) for r, actions in shape["resources"] for a in actions]


def anchor_expected(name: str) -> list[str]:
    """The anchor's requests/<name>.expected.json, as ALLOW/DENY in request order."""
    shape = anchor().SHAPES[name]
    path = CERBOS_DIR / "requests" / f"{name}.expected.json"
    effects = json.loads(path.read_text())
    oracle = anchor().expected(shape)
    if effects != oracle:  # the anchor's file and its oracle must agree first
        raise SystemExit(f"cerbos_requests: {path} differs from the anchor's scenario.py")
    return [_EFFECTS[effects[rid][action]] for rid, action in cells(shape)]


def shape_a() -> scenario.Shape:
    s = anchor().SHAPE_A
    (doc, (action,)) = s["resources"][0]
    msg = pb.CheckRequest(
        principal=_uid("User", s["principal"]["id"]),
        action=_uid("Action", action),
        resource=_uid("Document", doc["id"]),
        entities=[principal_entity(s["principal"]), document_entity(doc)],
    )
    return scenario.Shape("a", "Check", msg, anchor_expected("a"))


def shape_b() -> scenario.Shape:
    s = anchor().SHAPE_B
    msg = pb.CheckBatchRequest(
        principal=_uid("User", s["principal"]["id"]),
        entities=[principal_entity(s["principal"])]
        + [document_entity(doc) for doc, _ in s["resources"]],
    )
    for rid, action in cells(s):
        msg.items.add(action=_uid("Action", action), resource=_uid("Document", rid))
    return scenario.Shape("b", "CheckBatch", msg, anchor_expected("b"))


@cache
def shapes() -> dict[str, scenario.Shape]:
    return {s.name: s for s in (shape_a(), shape_b())}


def _engine() -> Any:
    from pdp.bundle import load_bundle
    from pdp.engine import Engine, Snapshot

    return Engine(Snapshot.of({"default": load_bundle(BUNDLE)}))


def mismatches() -> Iterator[str]:
    """Each shape's body, decided in process, against the anchor's expected decisions."""
    engine = _engine()
    for s in shapes().values():
        # Decode the exact body bytes: what the server will be sent, not the object built.
        decoded = scenario.Shape(
            s.name,
            s.method,
            type(s.message).FromString(scenario.grpc_unframe(s.body())),
            s.expected,
        )
        got = scenario.engine_decisions(engine, decoded)
        keys = cells(anchor().SHAPES[s.name])
        for (rid, action), want, have in zip(keys, s.expected, got, strict=True):
            if want != have:
                yield f"{s.name}: {rid} {action}: Cerbos {want}, cedar-pdp {have}"


def cross_check() -> None:
    bad = list(mismatches())
    if bad:
        raise SystemExit(
            "cerbos_requests: decisions differ from the anchor's\n  " + "\n  ".join(bad)
        )


def files() -> dict[str, bytes]:
    """Every file `write` writes, by name (after the cross-check)."""
    from google.protobuf import json_format

    cross_check()
    out: dict[str, bytes] = {}
    for s in shapes().values():
        out[f"{s.name}.bin"] = s.body()
        text = json_format.MessageToJson(s.message, indent=2, sort_keys=True)
        out[f"{s.name}.json"] = (text + "\n").encode()
        expected: dict[str, dict[str, str]] = {}
        keys = cells(anchor().SHAPES[s.name])
        for (rid, action), decision in zip(keys, s.expected, strict=True):
            expected.setdefault(rid, {})[action] = decision
        out[f"{s.name}.expected.json"] = (json.dumps(expected, indent=2) + "\n").encode()
    return out


def iter_write(outdir: Path) -> Iterator[str]:
    """Write each shape's files into `outdir`; one line per shape."""
    written = files()
    outdir.mkdir(parents=True, exist_ok=True)
    for name, data in written.items():
        (outdir / name).write_bytes(data)
    for s in shapes().values():
        yield (
            f"{s.name}: {s.method}, {len(written[s.name + '.bin'])} byte framed body, "
            f"{s.decisions} decision(s), {s.expected.count(scenario.ALLOW)} allow, "
            f"same as Cerbos -> {outdir / s.name}.bin"
        )


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) <= 2:
        for line in iter_write(Path(argv[1]) if len(argv) == 2 else REQUESTS):
            print(line)
        return 0
    if argv == ["check"]:
        stale = [n for n, data in files().items() if _read(REQUESTS / n) != data]
        for s in shapes().values():
            n = s.expected.count(scenario.ALLOW)
            print(f"{s.name}: OK, {s.decisions} decision(s) ({n} allow) equal the anchor's")
        if stale:
            print(f"stale in {REQUESTS}: {', '.join(stale)} (run: write)", file=sys.stderr)
            return 1
        print(f"{REQUESTS}: up to date")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
