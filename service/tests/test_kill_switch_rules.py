"""The kill switch's rules for all inputs (hypothesis): which decisions a set of switches
covers, and that its state file gives every reader (a restart, another worker) exactly
what the writer holds."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.kill_switch import KillSwitch, Scope
from pdp.model import EntityRef

TENANTS = ["acme", "globex"]
ACTIONS = [
    EntityRef("Action", "read"),
    EntityRef("Action", "edit"),
    EntityRef("App::Action", "read"),
]

UNIVERSE = [
    Scope(),
    # Narrower scopes listed more often: a narrow switch decides only where no wider one
    # covers the same request, which is rare otherwise.
    *[Scope(t) for t in TENANTS] * 4,
    *[Scope(t, a) for t in TENANTS for a in ACTIONS] * 2,
]
scopes = st.sampled_from(UNIVERSE)
requests = st.tuples(st.sampled_from([*TENANTS, "initech", ""]), st.sampled_from(ACTIONS))
SEEN: Counter[str] = Counter()


def covering(scope: Scope, tenant: str, action: EntityRef) -> bool:
    t = tenant or "default"
    return not scope.tenant or (scope.tenant == t and scope.action in (None, action))


def breadth(scope: Scope) -> int:
    return 0 if not scope.tenant else 1 if scope.action is None else 2


@settings(max_examples=300)
@given(st.lists(scopes, max_size=4, unique=True), st.lists(requests, min_size=1, max_size=8))
def test_a_decision_is_killed_exactly_when_a_switch_covers_it(
    killed: list[Scope], checks: list[tuple[str, EntityRef]]
) -> None:
    ks = KillSwitch(None)
    ks._admin = {s.key: _kill(s) for s in killed}  # no file: the rule alone
    ks._reindex()
    for tenant, action in checks:
        cover = [s for s in killed if covering(s, tenant, action)]
        got = ks.reason(tenant, action)
        if not cover:
            assert got is None
            SEEN["not covered" if killed else "nothing killed"] += 1
            continue
        widest = min(cover, key=breadth)  # the PDP-wide switch's reason, then the tenant's
        assert got == f"kill switch: {widest.label()}"
        SEEN[["pdp", "tenant", "action"][breadth(widest)]] += 1


def _kill(scope: Scope) -> object:
    from pdp.kill_switch import Kill

    return Kill(scope, scope.label(), "admin")


def test_the_generator_reaches_every_case() -> None:
    """Run after the property above (file order): each kind of outcome was met, often."""
    assert all(
        SEEN[k] >= 10 for k in ("pdp", "tenant", "action", "not covered", "nothing killed")
    ), SEEN


ops = st.lists(
    st.tuples(
        st.booleans(),
        scopes,
        # Printable reasons drawn directly (filtering arbitrary text for printable ones
        # discarded most inputs: hypothesis's filter_too_much health check then fails).
        st.text(
            st.characters(categories=("L", "N", "P", "S"), include_characters=" "),
            min_size=1,
            max_size=20,
        )
        .filter(str.isprintable)
        .filter(str.strip),
    ),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_every_reader_of_the_state_file_sees_what_the_writer_holds(
    steps: list[tuple[bool, Scope, str]],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "kill_switch.json"
        writer, reader = KillSwitch(state), KillSwitch(state)
        for set_it, scope, reason in steps:
            if set_it:
                writer.set(scope, reason, "tester")
            else:
                writer.clear(scope)
            reader.refresh()  # another worker, polling
            assert reader.active() == writer.active()
        assert KillSwitch(state).active() == writer.active()  # a restart
        assert [p.name for p in Path(d).iterdir()] in ([], ["kill_switch.json"])
