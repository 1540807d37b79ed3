"""Differential: a decision made on a slice of the store equals Cedar's on the whole graph.

For random graphs (users in groups and roles, with managers and orgs; documents in folders)
written to a real server's store through EntityService, and random requests over the org
bundle's policies (all within the slice depth), the server's answer (decision,
determining policies, erroring policies and their messages) must be what
`cedarpy.is_authorized` answers with every entity of the graph and the bundle.

The bundle here uses `"forbid_errors": "skip"` (Cedar's semantics to the letter), so the
comparison needs no model of the PDP's fail-closed rule. The test counts the cases where
the decision needed the slice: where Cedar, given only the principal and the resource
entities (no ancestors, nothing their attributes reference), decides otherwise.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import entity_pb2_grpc as epb_grpc

from .support import (
    BASE,
    MANIFEST,
    POLICIES,
    SCHEMA,
    check,
    document,
    folder,
    group,
    org,
    ref,
    store_server,
    user,
    write,
    write_bundle,
)

EXAMPLES = 150
IDS = re.findall(r'@id\("([^"]+)"\)', POLICIES)  # Cedar numbers them policy0, policy1, ...
_DECISION = {"Allow": pb.DECISION_ALLOW, "Deny": pb.DECISION_DENY}


@st.composite
def graphs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random entity graph: groups and folders nested as DAGs (the first group is
    `readers`, the first folder `shared`, which the policies name), users in groups and
    the bundle's roles, documents in folders; attributes reference users that may not
    exist (`ghost`)."""
    orgs = [org("acme", draw(st.booleans())), org("ice", draw(st.booleans()))]
    n_groups = draw(st.integers(0, 4))
    groups = ["readers", *[f"g{i}" for i in range(1, n_groups)]][:n_groups]
    n_folders = draw(st.integers(0, 3))
    folders = ["shared", *[f"f{i}" for i in range(1, n_folders)]][:n_folders]
    users = [f"u{i}" for i in range(draw(st.integers(1, 5)))]
    people = [*users, "ghost"]

    def some(names: list[str], t: str) -> list[dict[str, str]]:
        chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        return [ref(t, n) for n in chosen]

    out = list(orgs)
    out += [group(g, *some(groups[:i], "Group")) for i, g in enumerate(groups)]
    out += [folder(f, *some(folders[:i], "Folder")) for i, f in enumerate(folders)]
    for u in users:
        parents = some(groups, "Group") + some(["admin", "auditor"], "Role")
        manager = draw(st.none() | st.sampled_from(people))
        out.append(
            user(
                u,
                *parents,
                org=draw(st.sampled_from(["acme", "ice"])),
                suspended=draw(st.booleans()),
                manager=manager,
            )
        )
    for i in range(draw(st.integers(1, 3))):
        out.append(
            document(
                f"d{i}",
                draw(st.sampled_from(people)),
                *some(folders, "Folder"),
                org=draw(st.sampled_from(["acme", "ice"])),
            )
        )
    return out


def requests(graph: list[dict[str, Any]]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    users = [e["uid"]["id"] for e in graph if e["uid"]["type"] == "User"] + ["ghost"]
    docs = [e["uid"]["id"] for e in graph if e["uid"]["type"] == "Document"] + ["nodoc"]
    one = st.tuples(
        st.sampled_from(users),
        st.sampled_from(["read", "edit", "delete"]),
        st.sampled_from(docs),
        st.none() | st.sampled_from(users),
    )
    return st.lists(one, min_size=1, max_size=4)


def cedar(
    principal: str, action: str, resource: str, context: dict[str, Any], entities: list[Any]
) -> tuple[int, list[str], list[tuple[str, str]]]:
    """Cedar's answer on `entities`, in the server's terms (policy @ids)."""
    answer = cedarpy.is_authorized(
        {
            "principal": ref("User", principal),
            "action": ref("Action", action),
            "resource": ref("Document", resource),
            "context": context,
        },
        POLICIES,
        json.dumps(entities),
        SCHEMA_HANDLE,
    )
    named = {f"policy{i}": pid for i, pid in enumerate(IDS)}
    errors = []
    for message in answer.diagnostics.errors:
        m = re.match(r"^error while evaluating policy `([^`]*)`: (.*)$", message, re.S)
        assert m is not None, message
        errors.append((named[m[1]], m[2]))
    reasons = sorted(named[r] for r in answer.diagnostics.reasons)
    return _DECISION[answer.decision.value], reasons, sorted(errors)


SCHEMA_HANDLE = cedarpy.Schema.from_str(SCHEMA)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    where = tmp_path_factory.mktemp("differential")
    write_bundle(where / "bundle", {**MANIFEST, "forbid_errors": "skip"})
    with store_server(where) as (_, checks, entities):
        yield checks, entities


def test_sliced_decisions_equal_cedar_on_the_whole_graph(served: Any) -> None:
    checks: pb_grpc.AuthorizationServiceStub
    entities: epb_grpc.EntityServiceStub
    checks, entities = served
    counts: Counter[str] = Counter()
    stored: set[tuple[str, str]] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def differential(data: st.DataObject) -> None:
        graph = data.draw(graphs())
        uids = {(e["uid"]["type"], e["uid"]["id"]) for e in graph}
        write(entities, graph, sorted(stored - uids))  # the graph replaces the last one
        stored.clear()
        stored.update(uids)
        whole = BASE + graph
        for principal, action, resource, approver in data.draw(requests(graph)):
            context = {} if approver is None else {"approver": {"__entity": ref("User", approver)}}
            got = checks.Check(check(principal, action, resource, context=context))
            wanted = cedar(principal, action, resource, context, whole)
            errors = sorted((e.policy_id, e.message) for e in got.errors)
            assert (got.decision, sorted(got.determining_policies), errors) == wanted
            counts["requests"] += 1
            counts["allow" if got.decision == pb.DECISION_ALLOW else "deny"] += 1
            counts["with errors"] += bool(errors)
            alone = [
                e for e in whole if e["uid"] in (ref("User", principal), ref("Document", resource))
            ]
            # Only the two entities, without their parents: no ancestor, no reference.
            bare = [{**e, "parents": []} for e in alone]
            if cedar(principal, action, resource, context, bare)[0] != wanted[0]:
                counts["needed the slice"] += 1

    differential()
    print(dict(counts))
    assert counts["requests"] >= EXAMPLES
    # The generator reaches both outcomes, errors, and decisions that rest on what only
    # the slice (ancestors, referenced entities) supplies.
    assert counts["allow"] >= counts["requests"] // 10
    assert counts["deny"] >= counts["requests"] // 10
    assert counts["with errors"] >= 5
    assert counts["needed the slice"] >= counts["requests"] // 20
