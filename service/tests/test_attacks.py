"""Attacks on the PDP by a hostile caller or a careless operator (issue 6, before closing).

Each test reproduces one finding against the real server; a finding not yet fixed is
marked `xfail(strict=True)` so that the suite stays green until its fix lands.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.errors import InvalidRequest
from pdp.grpc.convert import DEFAULT_LIMITS, context, record

from .grpc.trust_support import TEAM, TEAM_OPEN, check, entity, ref, write_bundle
from .support import DOCS_BUNDLE, ServerProcess, running_server
from .test_bundle_files import MIB, header, padded, peak_growth

REQ = pb.CheckRequest(
    tenant="live",
    principal=vpb.EntityUid(type="User", id="bob"),
    action=vpb.EntityUid(type="Action", id="read"),
    resource=vpb.EntityUid(type="Document", id="doc1"),
)


def settled_log_bytes(srv: ServerProcess, start: int) -> int:
    """Bytes the server logged from line `start` on, once it stops logging for a while."""
    size = -1
    while True:
        now = sum(len(line) + 1 for line in srv.lines[start:])
        if now == size:
            return size
        size = now
        time.sleep(0.5)


# What a careless operator drops into a served bundle: a 60 KB file of 20,000 junk
# statements (one parse problem each), or 2,000 policies that parse but fail validation.
JUNK = {
    "parse": "x;\n" * 20_000,
    "validation": "permit(principal, action, resource) when { principal.nope };\n" * 2_000,
}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_a_bundle_of_junk_policies_does_not_flood_the_log(tmp_path: Path, kind: str) -> None:
    """Every reload attempt logged every problem of a refused bundle: 1 MB for the 60 KB
    file of `x;` (17x; a 16 MiB file, the per-file cap, ~300 MB each time it changed),
    and kept it all in the tenant's status. What is logged is bounded instead."""
    bundle = tmp_path / "live"
    shutil.copytree(DOCS_BUNDLE, bundle)
    args = ["--bundle", f"live={bundle}", "--reload-debounce-ms", "50"]
    with running_server(args) as srv, srv.channel() as ch:
        srv.wait_for_log("watching")
        mark = len(srv.lines)
        (bundle / "junk.cedar").write_text(JUNK[kind])
        srv.wait_for_log(r"tenant live: bundle refused, keeping version", start=mark)
        logged = settled_log_bytes(srv, mark)
        assert "junk.cedar:1" in srv.log()
        # Still serving the last good version.
        assert pb_grpc.AuthorizationServiceStub(ch).Check(REQ).decision == pb.DECISION_ALLOW
    # A bounded report is at most 16 KiB; the unbounded one was ~1 MB.
    assert logged < 64 * 1024, f"{logged} bytes logged for a {len(JUNK[kind])}-byte file"


def gnu_sparse_header(name: str, real_size: int) -> bytes:
    """A GNU sparse member (type `S`) that stores no data and claims `real_size` bytes:
    one hole. tarfile counts it a regular file and extracts it as `real_size` NULs."""
    block = bytearray(header(name, 0))
    block[156:157] = tarfile.GNUTYPE_SPARSE
    block[386:398] = b"%011o\0" % real_size  # the one data region: 0 bytes at the end
    block[398:410] = b"%011o\0" % 0
    block[483:495] = b"%011o\0" % real_size  # the file's real size
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_a_sparse_archive_member_is_refused_before_it_is_extracted(tmp_path: Path) -> None:
    """A 150-byte .tar.gz whose member claims 128 MiB of holes: the header checks read its
    stored size (0), tarfile extracted 128 MiB of NULs (16 MiB is the per-file cap; a
    claim of 8 GiB, the octal field's largest, is an OOM kill of the server)."""
    archive = tmp_path / "sparse.tar.gz"
    manifest = b'{"name": "x", "version": "1"}'
    with gzip.open(archive, "wb") as gz:
        gz.write(header("manifest.json", len(manifest)) + padded(manifest))
        gz.write(gnu_sparse_header("big.cedar", 128 * MIB) + bytes(1024))
    assert archive.stat().st_size < 1024
    growth, message = peak_growth(archive)
    assert message is not None and "big.cedar: sparse archive member refused" in message
    assert growth < 32 * MIB


def groups(n: int, chained: bool) -> list[Any]:
    """`n` request groups, each in the next (a chain) or in none, ids padded so that both
    lists have the same size in bytes."""
    out = []
    for i in range(n):
        parents = [ref("Group", f"g{i + 1:05}")] if chained and i + 1 < n else []
        out.append(entity("Group", f"g{i:05}", None, *parents))
    return out


def test_a_chain_of_request_entities_is_refused_before_cedar_computes_its_ancestry(
    tmp_path: Path,
) -> None:
    """A bundle that lets requests supply groups in groups (`request_entities`, or
    "trusted"): 500 groups in one chain, a 50 KB request, took 3-4 s of the server, holding
    the GIL (1,000: 28 s; 16 layers of 60 groups, each in all of the next layer, 22 s) where
    500 groups in none take 2 ms: Cedar computes the hierarchy's transitive closure when
    the request entities are added, in time ~n^3 for a chain. So the parent references of
    one request are capped (`max_request_entity_parents`, 100 by default) before Cedar
    sees them; at the cap a chain costs milliseconds (figures in bench/RESULTS.md)."""
    bundle = write_bundle(tmp_path / "open", TEAM, {"name": "team-open", **TEAM_OPEN})
    with running_server(["--bundle", f"open={bundle}", "--no-watch"]) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)

        def send(entities: list[Any]) -> Any:
            request = check(("User", "root"), "view", ("Doc", "d1"), None, [], "open")
            request.entities_json = json.dumps(entities)
            return stub.Check(request, timeout=60)

        with pytest.raises(grpc.RpcError) as err:
            send(groups(500, chained=True))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == (
            "entities_json: 499 parent references exceed the limit of 100"
        )
        # At the cap the same chain is decided; as many groups with no parents too.
        assert send(groups(101, chained=True)).decision == pb.DECISION_ALLOW
        assert send(groups(500, chained=False)).decision == pb.DECISION_ALLOW


def test_an_oversized_typed_context_is_refused_as_cheaply_as_context_json() -> None:
    """A typed context of 900,000 bools (3.6 MB) took 1.3-2.6 s to be refused for exceeding
    the 64 KiB context cap, holding the server (the cap was checked on its JSON, after
    converting every value); the same-size `context_json` is refused in 25-36 ms."""
    base = {
        "principal": vpb.EntityUid(type="User", id="bob"),
        "action": vpb.EntityUid(type="Action", id="read"),
        "resource": vpb.EntityUid(type="Document", id="doc1"),
    }
    many = vpb.Value(set=vpb.SetValue(values=[vpb.Value(bool=True)] * 900_000))
    typed = pb.CheckRequest(tenant="docs", context={"x": many}, **base)
    text = pb.CheckRequest(
        tenant="docs",
        context_json=json.dumps({"x": [True] * 720_000}, separators=(",", ":")),
        **base,
    )
    assert abs(typed.ByteSize() - text.ByteSize()) < 100_000  # the same size on the wire
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]) as srv:
        with srv.channel() as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            details = {}
            for name, request in (("json", text), ("typed", typed)):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Check(request, timeout=60)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                details[name] = err.value.details() or ""
    assert "limit of 65536" in details["json"]
    # Refused by its protobuf size, before a single value is converted (no timing here:
    # the figures, 1.3 s before and 150 ms after against 25 ms, are in the commit).
    assert details["typed"].startswith("context: ") and "bytes of protobuf" in details["typed"]


_LEAF = st.one_of(
    st.builds(vpb.Value, bool=st.booleans()),
    st.builds(vpb.Value, long=st.integers(-3, -1) | st.integers(-(2**63), 2**63 - 1)),
    st.builds(vpb.Value, string=st.text(max_size=3)),
    st.builds(
        vpb.Value, entity=st.builds(vpb.EntityUid, type=st.just("T"), id=st.text(max_size=2))
    ),
    st.builds(vpb.Value, decimal=st.just("1.0")),
)
_VALUES = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        # The densest protobuf for its JSON: sets of small negative longs (`-1,`).
        st.builds(
            lambda xs: vpb.Value(set=vpb.SetValue(values=xs)),
            st.lists(st.builds(vpb.Value, long=st.integers(-3, -1)), min_size=5, max_size=20),
        ),
        st.builds(lambda xs: vpb.Value(set=vpb.SetValue(values=xs)), st.lists(inner, max_size=6)),
        st.builds(
            lambda d: vpb.Value(record=vpb.RecordValue(fields=d)),
            st.dictionaries(st.text(max_size=2), inner, max_size=4),
        ),
    ),
    max_leaves=30,
)


def test_the_typed_context_pre_check_never_refuses_what_the_cap_accepts() -> None:
    """The protobuf-size check refuses a typed context only if its Cedar JSON is over the
    cap anyway: it saves the conversion, and never changes which contexts are accepted.
    The generator reaches acceptance, both refusals and dense contexts (small negative
    longs: 11 bytes of protobuf each, 2 of JSON); derandomized, so the counts are stable."""
    seen: Counter[str] = Counter()

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.dictionaries(st.text(max_size=2), _VALUES, min_size=1, max_size=4), st.integers(1, 64)
    )
    def run(typed: dict[str, vpb.Value], limit: int) -> None:
        limits = replace(DEFAULT_LIMITS, max_context_bytes=limit)
        as_json = json.dumps(record("context", typed), separators=(",", ":"))
        try:
            context("context", typed, "", limits)
            seen["accepted"] += 1
        except InvalidRequest as exc:
            assert len(as_json) > limit, (exc, as_json)
            seen["refused before converting" if "protobuf" in exc.message else "refused"] += 1
        wire = sum(len(k) + v.ByteSize() for k, v in typed.items())
        if wire > 3 * len(as_json):
            seen["dense (over 3 protobuf bytes per JSON byte)"] += 1

    run()
    print(dict(seen))
    assert len(seen) == 4 and min(seen.values()) >= 5, seen


@pytest.mark.xfail(strict=True, reason="Cedar's message names no field; the error says request")
def test_a_context_cedar_cannot_read_is_refused_naming_context_json() -> None:
    """A number out of range (`1e400`) in `context_json` (like a duration that overflows)
    was refused as `request: failed to build request: ...`: the field the caller must fix
    is unnamed (the engine finds a field only by the words in Cedar's message)."""
    request = pb.CheckRequest(
        principal=vpb.EntityUid(type="User", id="dave"),
        action=vpb.EntityUid(type="Action", id="refund"),
        resource=vpb.EntityUid(type="Invoice", id="inv-1001"),
        context_json='{"amount_cents": 1e400}',
    )
    with running_server(["--no-watch"]) as srv, srv.channel() as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.AuthorizationServiceStub(ch).Check(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("context"), err.value.details()


def test_a_bundles_dir_entry_named_to_forge_log_lines_is_no_tenant(tmp_path: Path) -> None:
    """A directory name is a tenant name, logged and used as a health service name: one
    holding a newline wrote a forged line into the log. It is ignored, said once, quoted."""
    root = tmp_path / "bundles"
    root.mkdir()
    shutil.copytree(DOCS_BUNDLE, root / "acme")
    shutil.copytree(DOCS_BUNDLE, root / "x\nERROR tenant acme: bundle refused")
    with running_server(["--bundles-dir", str(root), "--no-watch"]) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        request = pb.CheckRequest(
            tenant="acme",
            principal=vpb.EntityUid(type="User", id="alice"),
            action=vpb.EntityUid(type="Action", id="read"),
            resource=vpb.EntityUid(type="Document", id="doc1"),
        )
        assert stub.Check(request).decision == pb.DECISION_ALLOW  # acme is served
        srv.wait_for_log(r"ignoring 'x\\nERROR tenant acme: bundle refused': not a tenant name")
    assert not any(line.startswith("ERROR tenant acme") for line in srv.lines), srv.log()
