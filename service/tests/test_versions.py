"""Bundle version order (no downgrade): semver-like versions are totally ordered, numeric
parts as numbers (checked against `packaging`'s PEP 440 order, which agrees on them), a
pre-release below its release, anything else unordered, so a change involving it is refused."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from pdp.versions import compare, downgrade

numeric = st.lists(st.integers(0, 12), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)
pre_ids = st.lists(
    st.one_of(st.integers(0, 3).map(str), st.sampled_from(["alpha", "beta", "rc"])),
    min_size=1,
    max_size=3,
)
semverish = st.tuples(
    st.sampled_from(["", "v"]), numeric, st.none() | pre_ids, st.none() | st.just("build.7")
).map(
    lambda t: (
        t[0]
        + t[1]
        + ("" if t[2] is None else "-" + ".".join(t[2]))
        + ("" if t[3] is None else "+" + t[3])
    )
)
unordered = st.sampled_from(["blue", "abc123", "1.0_final", "2024/06", "1..2", "-1"])


def test_numeric_versions_are_ordered_as_numbers() -> None:
    seen: Counter[int] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(numeric, numeric)
    def prop(a: str, b: str) -> None:
        order = compare(a, b)
        expected = (Version(a) > Version(b)) - (Version(a) < Version(b))
        assert order == expected, (a, b)
        seen[expected] += 1

    prop()
    # The generator reaches all three outcomes, equal included (`1.2` = `1.2.0`).
    assert min(seen[-1], seen[0], seen[1]) >= 20, seen


def test_semver_like_order_is_antisymmetric_and_transitive() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(semverish, semverish, semverish)
    def prop(a: str, b: str, c: str) -> None:
        ab, bc, ac = compare(a, b), compare(b, c), compare(a, c)
        assert ab is not None and bc is not None and ac is not None
        assert compare(b, a) == -ab
        if ab <= 0 and bc <= 0:
            assert ac <= 0, (a, b, c)
            seen["chain"] += 1
        seen["pre" if "-" in a else "release"] += 1

    prop()
    assert seen["chain"] >= 30 and seen["pre"] >= 60 and seen["release"] >= 60, seen


@settings(max_examples=200, deadline=None)
@given(numeric, pre_ids)
def test_a_pre_release_is_below_its_release(release: str, ids: list[str]) -> None:
    pre = f"{release}-{'.'.join(ids)}"
    assert compare(pre, release) == -1 and compare(release, pre) == 1
    assert compare(pre, release + ".0") == -1  # a missing part is 0


def test_examples_and_what_unordered_versions_do() -> None:
    assert compare("1.10.0", "1.9.9") == 1
    assert compare("v2", "2.0.0") == 0
    assert compare("1.0.0-rc.1", "1.0.0-rc.2") == -1
    assert compare("1.0.0-rc.10", "1.0.0-rc.9") == 1  # numeric identifiers as numbers
    assert compare("1.0.0-1", "1.0.0-alpha") == -1  # numeric below alphanumeric
    assert compare("1.0.0-alpha", "1.0.0-alpha.1") == -1  # shorter first
    assert compare("1.0.0+a", "1.0.0+b") == 0  # build metadata ignored
    assert downgrade("1.0.0", "1.0.0", "served") is None
    assert downgrade("1.1.0", "1.0.0", "served") is None
    assert "lower than 1.0.0, served: a downgrade" in (downgrade("0.9", "1.0.0", "served") or "")


@settings(max_examples=200, deadline=None)
@given(unordered, semverish | unordered)
def test_a_change_to_or_from_an_unordered_version_is_refused(a: str, b: str) -> None:
    if a == b:
        assert downgrade(a, b, "served") is None
        return
    assert compare(a, b) is None and compare(b, a) is None
    assert "cannot be ordered" in (downgrade(a, b, "served") or "")
    assert "cannot be ordered" in (downgrade(b, a, "served") or "")
