"""Property: request entities never change a decision except as the bundle allows.

Random request-entity sets over the default bundle's schema (uids of the base, uids it
names, fresh ones; parents of any type; schema-valid attributes whose references point
at base and fresh entities), with random principal, action, resource and context (which
mostly carries the step-up and session facts, an agent's `tokens` within its limits and
a refund's invoice currency and customer, so the bundle's genuine controls pass often
enough for the entities to be what decides):

- default bundle (`request_entities: {}`): a request the PDP accepts has the decision
  it has without its request entities (and only an empty set is accepted);
- `agents` variant (requests may supply `Agent`s in `Role`s): a set is accepted exactly
  when every entity is a fresh Agent whose parents are Roles, so any decision it
  changes was changed only by entities of an allowed type with allowed parents;
- the generator reaches the attack: under `"trusted"` (Cedar's model) some generated
  sets turn a Deny into an Allow; their count must be > 0.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..support import REPO
from .trust_support import ALLOW, STEPPED_UP, check, stub

__all__ = ["stub"]  # the module's server fixture

BASE = json.loads((REPO / "policies" / "entities.json").read_text())
DEFINED = {(e["uid"]["type"], e["uid"]["id"]) for e in BASE}


def _named(value: Any) -> set[tuple[str, str]]:
    if isinstance(value, dict):
        ref = value.get("__entity")
        found = {(ref["type"], ref["id"])} if isinstance(ref, dict) else set()
        return found.union(*(_named(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_named(v) for v in value))
    return set()


NAMED = set().union(*(_named(e["attrs"]) for e in BASE))
NAMED |= {(p["type"], p["id"]) for e in BASE for p in e["parents"]}
TYPES = [
    *("Org", "Role", "User", "Agent", "Project", "Document", "Report", "Invoice", "Customer"),
    *("Source", "Tool"),
]
PRINCIPALS = ["User", "Agent"]
FRESH = ["eve", "sock", "x1"]  # ids no base entity has, shared by every type
# Base ids twice as likely as fresh ones: references and parents mostly hit real entities.
IDS = {t: sorted({i for (ty, i) in DEFINED | NAMED if ty == t}) * 2 + FRESH for t in TYPES}
BASE_IDS = {t: sorted({i for (ty, i) in DEFINED if ty == t}) for t in TYPES}
INVOICES = {  # base invoice: (currency, customer id), what a genuine refund states
    e["uid"]["id"]: (e["attrs"]["currency"], e["attrs"]["customer"]["__entity"]["id"])
    for e in BASE
    if e["uid"]["type"] == "Invoice"
}
ACTIVE = st.sampled_from([False, False, True])  # `suspended`: an active account denies less
TOOLS = ["web-search", "sql-query", "bulk-delete"]
ACTIONS = {  # action: (principal types, resource types, context kind), as the schema says
    "invoke_tool": (["Agent"], ["Tool"], "tool"),
    "read": (["User", "Agent"], ["Document", "Project", "Report", "Invoice"], "resource"),
    "refund": (["User", "Agent"], ["Invoice"], "refund"),
    "delete": (["User", "Agent"], ["Document", "Project"], "resource"),
    "edit": (["User", "Agent"], ["Document", "Project"], "resource"),
    "export": (["User", "Agent"], ["Document", "Report"], "resource"),
    "read_pii": (["User", "Agent"], ["Customer"], "pii"),
    "retrieve": (["Agent"], ["Source"], "resource"),
}


def uids(t: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from(IDS[t]).map(lambda i: (t, i))


def ref(t: str) -> st.SearchStrategy[Any]:
    return uids(t).map(lambda u: {"__entity": {"type": u[0], "id": u[1]}})


# Mostly acme: the default bundle's entities and grants are acme's.
ORG = st.sampled_from(["acme", "acme", "acme", "globex", "x1"]).map(
    lambda i: {"__entity": {"type": "Org", "id": i}}
)


def users() -> st.SearchStrategy[list[Any]]:
    return st.lists(ref("User"), max_size=2)


def duration(*args: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(args).map(lambda a: {"__extn": {"fn": "duration", "arg": a}})


def sources(min_size: int = 0) -> st.SearchStrategy[list[Any]]:
    return st.lists(ref("Source"), min_size=min_size, max_size=2, unique_by=json.dumps)


REGION, DEPT = st.sampled_from(["eu", "us"]), st.sampled_from(["engineering", "sales", "finance"])
PURPOSES = ["billing", "support", "marketing"]
CLEARED = {"cleared_purposes": st.lists(st.sampled_from(PURPOSES), unique=True)}
UNFROZEN = st.sampled_from([False, False, True])  # `frozen`: an unfrozen resource denies less
TOKENS = [50, 300]  # what requests mostly spend: within the base limits and most generated
ATTRS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "Org": st.fixed_dictionaries(
        {
            "name": st.just("O"),
            "tier": st.sampled_from(["free", "enterprise"]),
            "region": REGION,
            "dual_control_threshold_cents": st.sampled_from([20000, 100000]),
            "max_session_age": duration("8h", "10m"),
            "max_idle": duration("30m", "1m"),
            "token_budget_remaining": st.sampled_from([20000, 0]),
            "frozen": UNFROZEN,
        }
    ),
    "Role": st.just({}),
    "User": st.fixed_dictionaries(
        {"org": ORG, "department": DEPT, "region": REGION, "suspended": ACTIVE},
        optional=CLEARED,
    ),
    "Agent": st.fixed_dictionaries(
        {
            "org": ORG,
            "region": REGION,
            "allowed_tools": st.lists(st.sampled_from(TOOLS), unique=True),
            "suspended": ACTIVE,
            "allowed_sources": sources(),
            "max_tokens_per_request": st.sampled_from([100000, 400, 100]),
        },
        optional={"on_behalf_of": ref("User"), **CLEARED},
    ),
    "Project": st.fixed_dictionaries(
        {"org": ORG, "owner": ref("User"), "editors": users(), "viewers": users()},
        optional={"frozen": UNFROZEN},
    ),
    "Document": st.fixed_dictionaries(
        {
            "org": ORG,
            "project": ref("Project"),
            "owner": ref("User"),
            "editors": users(),
            "viewers": users(),
        },
        optional={"residency": REGION, "frozen": UNFROZEN},
    ),
    "Report": st.fixed_dictionaries({"org": ORG, "department": DEPT}),
    "Invoice": st.fixed_dictionaries(
        {
            "org": ORG,
            "amount_cents": st.integers(0, 300000),
            "currency": st.sampled_from(["EUR", "EUR", "USD"]),
            "customer": ref("Customer"),
        },
        optional={"frozen": UNFROZEN},
    ),
    "Customer": st.fixed_dictionaries(
        {"org": ORG, "pii_purposes": st.lists(st.sampled_from(PURPOSES), unique=True)}
    ),
    "Source": st.fixed_dictionaries(
        {"org": ORG, "name": st.sampled_from(["handbook", "billing-kb", "hr-records"])}
    ),
    "Tool": st.fixed_dictionaries(
        {"org": ORG, "name": st.sampled_from(TOOLS), "high_risk": st.booleans()}
    ),
}


ACME = {"__entity": {"type": "Org", "id": "acme"}}
# A made-up active acme principal in real roles: the shape of every fabrication attack,
# which fully random attributes reach too rarely to count on.
IMPOSTORS = {
    "User": st.fixed_dictionaries(
        {"org": st.just(ACME), "department": DEPT, "region": REGION, "suspended": st.just(False)},
        optional=CLEARED,
    ),
    "Agent": st.fixed_dictionaries(
        {
            "org": st.just(ACME),
            "region": REGION,
            "allowed_tools": st.lists(st.sampled_from(TOOLS), min_size=1, unique=True),
            "suspended": st.just(False),
            "allowed_sources": sources(min_size=1),
            "max_tokens_per_request": st.sampled_from([400, 100000]),
        },
        optional={"on_behalf_of": ref("User"), **CLEARED},
    ),
}
ROLES = st.sampled_from(["billing-admin", "org-admin"]).map(lambda i: ("Role", i))


@st.composite
def entity_sets(draw: st.DrawFn) -> list[Any]:
    out: dict[tuple[str, str], Any] = {}
    if draw(st.integers(0, 2)):
        t = draw(st.sampled_from(PRINCIPALS))
        parents = draw(st.lists(ROLES, max_size=2, unique=True))
        out[(t, FRESH[0])] = {
            "uid": {"type": t, "id": FRESH[0]},
            "attrs": draw(IMPOSTORS[t]),
            "parents": [{"type": p[0], "id": p[1]} for p in parents],
        }
    for _ in range(draw(st.sampled_from([0, 0, 1]) if out else st.integers(1, 3))):
        t = draw(st.sampled_from(PRINCIPALS * 2 + TYPES))  # principals matter most
        # Mostly fresh uids and the parents the schema allows (Cedar refuses the rest, which
        # would leave too few sets decided); sometimes a base uid, a parent of any type.
        fresh = draw(st.integers(0, 9)) < 6
        uid = (t, draw(st.sampled_from(FRESH))) if fresh else draw(uids(t))
        any_type = draw(st.integers(0, 4)) == 0
        kinds = TYPES if any_type else ["Role"] if t in PRINCIPALS else []
        parents = draw(
            st.lists(st.sampled_from(kinds).flatmap(uids), max_size=2, unique=True)
            if kinds
            else st.just([])
        )
        out[uid] = {
            "uid": {"type": uid[0], "id": uid[1]},
            "attrs": draw(ATTRS[t]),
            "parents": [{"type": p[0], "id": p[1]} for p in parents],
        }
    return list(out.values())


@st.composite
def samples(draw: st.DrawFn) -> tuple[pb.CheckRequest, list[Any]]:
    entities = draw(entity_sets())
    mine = [(e["uid"]["type"], e["uid"]["id"]) for e in entities]
    mine = [u for u in mine if u[0] in PRINCIPALS]
    # Often one of the request's own entities: that is where fabrication bites.
    principal = draw(
        st.sampled_from(mine)
        if mine and draw(st.integers(0, 2))
        else st.sampled_from(PRINCIPALS).flatmap(uids)
    )
    action = draw(st.sampled_from([a for a, (ps, _, _) in ACTIONS.items() if principal[0] in ps]))
    _, resource_types, kind = ACTIONS[action]
    resource_type = draw(st.sampled_from(resource_types))
    resource = (
        resource_type,
        draw(st.sampled_from(BASE_IDS[resource_type]) | st.sampled_from(FRESH)),
    )
    approval = st.fixed_dictionaries({"approver": ref("User"), "ticket": st.just("T-1")})
    if kind == "refund":
        context = draw(
            st.fixed_dictionaries(
                {"amount_cents": st.sampled_from([5000, 150000])},
                optional={"approver": ref("User"), "human_approval": approval},
            )
        )
        # Mostly the invoice's own currency and customer (a fresh invoice's: made up);
        # sometimes another, or none.
        currency, customer = INVOICES.get(resource[1], ("EUR", "cust-1"))
        own = {"__entity": {"type": "Customer", "id": customer}}
        stated = {
            "currency": draw(st.sampled_from([currency] * 5 + ["USD", None])),
            "customer": draw(st.sampled_from([own] * 5 + [None]) | ref("Customer")),
        }
        context |= {k: v for k, v in stated.items() if v is not None}
    elif kind == "pii":
        context = draw(
            st.fixed_dictionaries(
                {}, optional={"purpose": st.sampled_from(PURPOSES), "human_approval": approval}
            )
        )
    else:
        context = draw(st.fixed_dictionaries({}, optional={"human_approval": approval}))
    # Mostly a stepped-up, fresh session; sometimes some facts missing, or a stale one.
    # (The common case comes first: Hypothesis draws a choice's first value most often.)
    facts = draw(st.sampled_from(["stepped-up"] * 6 + ["some", "stale"]))
    if facts == "stepped-up":
        context |= STEPPED_UP
    elif facts == "some":
        context |= {k: STEPPED_UP[k] for k in draw(st.sets(st.sampled_from(sorted(STEPPED_UP))))}
    else:
        context |= {**STEPPED_UP, "session_age": "13h", "idle": "2h"}  # past every max
    # An agent mostly states its tokens, within its limits; sometimes none, or out of range.
    if principal[0] == "Agent":
        tokens = draw(st.sampled_from([*TOKENS * 3, None, -1, 10**6]))
        context |= {} if tokens is None else {"tokens": tokens}
    return check(principal, action, resource, context), entities


def decide(stub: pb_grpc.AuthorizationServiceStub, tenant: str, req: pb.CheckRequest) -> Any:
    """The decision, or the refusal's details (INVALID_ARGUMENT is the only refusal allowed)."""
    request = pb.CheckRequest()
    request.CopyFrom(req)
    request.tenant = tenant
    try:
        return stub.Check(request, timeout=10).decision
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        return str(exc.details())


def allowed_for_agents(e: Any) -> bool:
    uid = (e["uid"]["type"], e["uid"]["id"])
    parents_ok = all(p["type"] == "Role" for p in e["parents"])
    return uid[0] == "Agent" and parents_ok and uid not in DEFINED | NAMED


def test_request_entities_change_decisions_only_as_the_bundle_allows(
    stub: pb_grpc.AuthorizationServiceStub,
) -> None:
    counts: Counter[str] = Counter()

    # Derandomized: the counts below are the same on every run (and in the report).
    @settings(
        max_examples=500,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sample=samples())
    def run(sample: tuple[pb.CheckRequest, list[Any]]) -> None:
        bare, entities = sample
        with_entities = pb.CheckRequest()
        with_entities.CopyFrom(bare)
        with_entities.entities_json = json.dumps(entities)
        without = decide(stub, "default", bare)
        if not isinstance(without, int):
            counts["request invalid without entities"] += 1
            return
        counts["sets"] += 1
        # The default bundle: no request entity is ever accepted.
        got = decide(stub, "default", with_entities)
        assert isinstance(got, str) and got.startswith("entities[0]: "), got
        # Cedar's model: does this set fabricate an Allow?
        trusted = decide(stub, "trusted", with_entities)
        if trusted == ALLOW and without != ALLOW:
            counts["trusted: Deny -> Allow"] += 1
        # Requests may supply agents: accepted exactly when every entity is one it may.
        agents = decide(stub, "agents", with_entities)
        ok = all(allowed_for_agents(e) for e in entities)
        assert isinstance(agents, int) == ok, (agents, entities)
        if ok:
            counts["agents: accepted"] += 1
            assert decide(stub, "agents", bare) == without  # the same base: the same decision
            if agents == ALLOW and without != ALLOW:
                counts["agents: Deny -> Allow"] += 1

    run()
    print(dict(counts))  # noqa: T201 - the figures for the report (pytest -s)
    # Counted, not assumed. This (derandomized) run: 14 of 500 sets fabricate an Allow
    # under "trusted"; `agents` accepts 110, none of which turns a Deny into an Allow
    # (fresh agents only). Random runs of 500 gave 7-22, 114-160 and 1-7.
    assert counts["sets"] >= 400
    assert counts["trusted: Deny -> Allow"] > 0
    assert counts["agents: accepted"] > 20
