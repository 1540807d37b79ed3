"""Signatures bound to tenants, in process: a signature that names tenants verifies for
exactly those, an unbound one for any tenant unless bound ones are required, and no edit of
the names in `signature.json` (drop, add, swap, reorder, empty) keeps a signature good.
The served side (start-up, reload, the CLI) is in test_signed_bundles.py."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp import signing
from pdp.bundle_files import SIGNATURE_FILE, BundleFiles, read_bundle_files
from pdp.errors import BundleError

from .support import REPO

KEY = Ed25519PrivateKey.generate()
TRUSTED = (signing.PublicKey(KEY.public_key(), "test"),)
BASE = read_bundle_files(REPO / "policies")
NAMES = ["acme", "beta", "default", "gamma.eu", "t-1"]
tenant_sets = st.lists(st.sampled_from(NAMES), max_size=4)


def signed(tenants: list[str]) -> BundleFiles:
    sig = signing.signature_file(BASE, "default", "1.1.0", KEY, tenants)
    return BundleFiles(BASE.source, {**BASE.files, SIGNATURE_FILE: sig})


def with_file(files: BundleFiles, edit: dict[str, object]) -> BundleFiles:
    body = json.loads(files.files[SIGNATURE_FILE])
    body.update(edit)
    if edit.get("tenants") is None:
        body.pop("tenants", None)
    return BundleFiles(files.source, {**files.files, SIGNATURE_FILE: json.dumps(body).encode()})


def outcome(files: BundleFiles, tenant: str | None, require: bool = False) -> str:
    try:
        signing.verify(files, "default", "1.1.0", TRUSTED, tenant, require)
    except BundleError as exc:
        return exc.message
    return "ok"


def test_a_signature_is_good_for_exactly_the_tenants_it_names() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    # Unbound as often as bound: an empty list is otherwise a rare draw.
    @given(st.just([]) | tenant_sets, st.sampled_from([*NAMES, None]), st.booleans())
    def prop(tenants: list[str], tenant: str | None, require: bool) -> None:
        got = outcome(signed(tenants), tenant, require)
        if tenant is None:
            case = "no tenant asked"
            good = True
        elif not tenants:
            case = "unbound, required" if require else "unbound"
            good = not require
        else:
            case = "named" if tenant in tenants else "not named"
            good = tenant in tenants
        seen[case] += 1
        assert (got == "ok") == good, (tenants, tenant, require, got)
        if case == "not named":
            assert f"signed for tenant(s) {', '.join(sorted(set(tenants)))}, not for" in got
        if case == "unbound, required":
            assert "signed for any tenant, and require_tenant_bound_signatures is set" in got

    prop()
    # Every branch is reached; an unbound signature has only 5 names x 2 settings of
    # distinct draws, and hypothesis does not repeat a draw, so each is reached ~all.
    assert min(seen["named"], seen["not named"], seen["no tenant asked"]) >= 15, seen
    assert min(seen["unbound"], seen["unbound, required"]) >= 5, seen


def test_no_edit_of_the_signed_tenant_names_keeps_the_signature_good() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(tenant_sets, tenant_sets, st.booleans())
    def prop(tenants: list[str], claimed: list[str], as_listed: bool) -> None:
        original = sorted(set(tenants))
        # As written (sorted, deduplicated) or as a caller might type it.
        edited = sorted(set(claimed)) if as_listed else claimed
        files = with_file(signed(tenants), {"tenants": edited or None})
        if edited == original:
            seen["unchanged"] += 1
            assert outcome(files, None) == "ok"
            return
        seen["bound" if original else "unbound"] += 1
        got = outcome(files, None)
        assert got != "ok", (original, edited)
        assert "signature.json: " in got
        # Even naming the tenant that asks cannot make an edited list good.
        for tenant in edited:
            assert outcome(files, tenant) != "ok", (original, edited, tenant)

    prop()
    assert seen["bound"] >= 100 and seen["unbound"] >= 20 and seen["unchanged"] >= 10, seen


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        (["Not A Name!"], "tenant name 'Not A Name!' must match"),
        ([f"t{i}" for i in range(signing.MAX_SIGNED_TENANTS + 1)], "at most 16 items"),
    ],
)
def test_a_bad_tenant_list_is_refused_when_signing_and_when_read(
    tenants: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match="tenants: "):
        signing.signature_file(BASE, "default", "1.1.0", KEY, tenants)
    # Written by hand beside a good signature: malformed, never a pass.
    got = outcome(with_file(signed([]), {"tenants": tenants}), tenants[0])
    assert "signature.json: malformed: tenants: " in got, got
    assert message in got, got


def test_an_unbound_signature_file_is_written_as_before() -> None:
    """Bundles signed before tenants existed verify unchanged: the file has no `tenants`."""
    body = json.loads(signing.signature_file(BASE, "default", "1.1.0", KEY))
    assert sorted(body) == ["algorithm", "format", "key_id", "signature"]
    bound = json.loads(signing.signature_file(BASE, "default", "1.1.0", KEY, ["b", "a", "b"]))
    assert bound["tenants"] == ["a", "b"]
