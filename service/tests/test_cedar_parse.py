"""The bundle's policies are Cedar's own parse: count, ids, effects, templates, @id.

Differential: every policies file of Cedar's conformance corpus, and generated files that
mix line endings, `//` comments (also at the end of a file, with no newline), string
literals holding `;`, `//`, `\\"` and annotations, compiled as bundles and compared with
`cedarpy`'s parse of each whole file. Plus the reproductions of issue 6 §2.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import Bundle, compile_bundle
from pdp.bundle_files import BundleFiles
from pdp.engine import _result
from pdp.errors import BundleError
from pdp.model import Decision

from .support import running_server
from .test_conformance import ARCHIVE, CORPUS, CORPUS_FILES, _load, _read_archive, _tests

SCHEMA = "entity User { blocked: Bool };\nentity R;\naction a appliesTo { principal: User, resource: R };\n"


def bundle_files(policies: dict[str, str], **manifest: Any) -> dict[str, bytes]:
    files = {
        "manifest.json": json.dumps({"name": "t", "version": "1", **manifest}).encode(),
        "schema.cedarschema": SCHEMA.encode(),
    }
    return files | {name: text.encode() for name, text in policies.items()}


def compile_files(files: dict[str, bytes]) -> Bundle:
    return compile_bundle(BundleFiles("test", files))


def cedar_view(text: str, first: int = 0) -> list[tuple[str, str, bool, str | None]]:
    """(bundle id, effect, template?, @id) of each policy, from Cedar's parse of `text`."""
    est = json.loads(cedarpy.policies_to_json_str(text))
    out = []
    for key, template in (("staticPolicies", False), ("templates", True)):
        for pid, p in est[key].items():
            bundle_id = f"policy{first + int(pid.removeprefix('policy'))}"
            out.append((bundle_id, p["effect"], template, (p.get("annotations") or {}).get("id")))
    return sorted(out)


def bundle_view(bundle: Bundle) -> list[tuple[str, str, bool, str | None]]:
    return sorted(
        (s.cedar_id, s.effect, s.is_template, None if s.policy_id == s.cedar_id else s.policy_id)
        for s in bundle.policies.values()
        if s.template_id is None
    )


# --------------------------------------------------------------- reproductions --

CR_FILE = (
    "permit(principal,action,resource);\n"
    '// guardrail\r@id("block")\rforbid(principal,action,resource) when { principal.blocked };'
)
# The same shape, the forbid erroring (no such attribute): Deny only if the PDP knows it.
CR_ERRORING = (
    "permit(principal,action,resource);\n"
    '// guardrail\r@id("block")\rforbid(principal,action,resource) when { principal.nope };'
)
ENTITIES = [{"uid": {"type": "User", "id": "u"}, "attrs": {"blocked": True}, "parents": []}]
REQUEST = {"principal": 'User::"u"', "action": 'Action::"a"', "resource": 'R::"r"', "context": {}}


def test_a_bare_cr_ends_a_comment_for_the_pdp_as_for_cedar(tmp_path: Path) -> None:
    strict = bundle_files({"p.cedar": CR_FILE})
    loose = bundle_files({"p.cedar": CR_ERRORING}, validation="off")
    for name, files in (("strict", strict), ("erroring", loose)):
        for path, data in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_bytes(data)
        (tmp_path / name / "entities.json").write_text(json.dumps(ENTITIES))
    cedar = cedarpy.is_authorized(REQUEST, CR_FILE, json.dumps(ENTITIES))
    assert cedar.decision == cedarpy.Decision.Deny
    request = pb.CheckRequest(
        principal=vpb.EntityUid(type="User", id="u"),
        action=vpb.EntityUid(type="Action", id="a"),
        resource=vpb.EntityUid(type="R", id="r"),
    )
    args = ["--no-watch", "--bundle", f"strict={tmp_path / 'strict'}"]
    with running_server([*args, "--bundle", f"erroring={tmp_path / 'erroring'}"]) as server:
        with server.channel() as channel:
            stub = server.stub(channel)
            strict_answer = stub.Check(pb.CheckRequest(tenant="strict", **_fields(request)))
            erroring_answer = stub.Check(pb.CheckRequest(tenant="erroring", **_fields(request)))
    # the erroring forbid fails closed: Deny, though Cedar itself skips it and allows
    assert (strict_answer.decision, erroring_answer.decision) == (pb.DECISION_DENY,) * 2
    assert list(strict_answer.determining_policies) == ["block"]
    assert list(erroring_answer.determining_policies) == ["block"]
    assert [e.policy_id for e in erroring_answer.errors] == ["block"]
    assert len(compile_files(strict).policies) == 2


def _fields(request: pb.CheckRequest) -> dict[str, Any]:
    return {"principal": request.principal, "action": request.action, "resource": request.resource}


def test_a_comment_at_the_end_of_a_file_does_not_swallow_the_next_file() -> None:
    first = "permit(principal, action, resource);\n// trailing, no newline"
    second = '@id("stop") forbid(principal, action, resource);\n'
    assert len(cedarpy.PolicySet.from_str(first + second)) == 1  # what concatenation would do
    bundle = compile_files(bundle_files({"a.cedar": first, "b.cedar": second}))
    assert bundle_view(bundle) == [
        ("policy0", "permit", False, None),
        ("policy1", "forbid", False, "stop"),
    ]
    assert (bundle.policies["policy1"].file, bundle.policies["policy1"].line) == ("b.cedar", 1)


TEMPLATE = (
    '@id("share")\npermit(principal == ?principal, action, resource) when { principal.nope };\n'
)


@pytest.mark.parametrize("new_id", ["x`: y", "a b", "é", "x" * 201, "policy`0"])
def test_a_link_id_that_would_make_attribution_ambiguous_is_refused(new_id: str) -> None:
    links = [{"template_id": "share", "new_id": new_id, "values": {"?principal": _user}}]
    files = bundle_files({"t.cedar": TEMPLATE}, validation="off")
    files["links.json"] = ("\n" + json.dumps(links)).encode()
    with pytest.raises(BundleError) as err:
        compile_files(files)
    [problem] = err.value.problems
    assert (problem.file, problem.line) == ("links.json", 2)
    assert problem.message.startswith("[0].new_id: ")


_user = {"type": "User", "id": "u"}


@pytest.mark.parametrize("annotated", ["a`b", "with space", "x" * 201, ""])
def test_an_id_annotation_outside_the_charset_is_refused(annotated: str) -> None:
    text = f"permit(principal, action, resource);\n\n@id({json.dumps(annotated)})\nforbid(principal, action, resource);"
    with pytest.raises(BundleError) as err:
        compile_files(bundle_files({"p.cedar": text}))
    assert [str(p) for p in err.value.problems] == [
        f"p.cedar:3 [{annotated!r}]: @id may hold only the characters [A-Za-z0-9_.:/-], 1 to 200 of them"
    ]


def test_an_id_annotation_of_the_positional_form_is_refused() -> None:
    # Un-annotated policies are reported as policyN: a policy claiming another's name
    # (here policy0, the permit's) would make every report about either ambiguous.
    text = 'permit(principal, action, resource);\n\n@id("policy0")\nforbid(principal, action, resource);'
    with pytest.raises(BundleError) as err:
        compile_files(bundle_files({"p.cedar": text}))
    assert [str(p) for p in err.value.problems] == [
        "p.cedar:3 [policy0]: @id of the form policyN is reserved: it names un-annotated policies"
    ]


def test_ids_of_the_allowed_charset_load_and_are_attributed() -> None:
    links = [{"template_id": "share", "new_id": "a-b_c.d:e/f", "values": {"?principal": _user}}]
    files = bundle_files({"t.cedar": TEMPLATE}, validation="off")
    files["links.json"] = json.dumps(links).encode()
    bundle = compile_files(files)
    cedar = cedarpy.is_authorized(REQUEST, bundle.policy_set, json.dumps(ENTITIES))
    assert cedar.diagnostics.errors[0].startswith("error while evaluating policy `a-b_c.d:e/f`: ")
    # the link is a permit: its error is skipped, as Cedar does, and it never grants
    assert _result(bundle, cedar._authz_resp, 0).errors[0].policy_id == "a-b_c.d:e/f"


@pytest.mark.parametrize("forbid_errors", ["deny", "skip"])
@pytest.mark.parametrize("named", ["ghost", "", "share", "policy1"])
def test_an_error_not_attributable_to_a_known_permit_turns_allow_into_deny(
    forbid_errors: str, named: str
) -> None:
    files = bundle_files(
        {"p.cedar": "permit(principal, action, resource);\n" + TEMPLATE},
        validation="off",
        forbid_errors=forbid_errors,
    )
    bundle = compile_files(files)
    message = f"error while evaluating policy `{named}`: boom" if named else "something failed"
    outcome = {"decision": "Allow", "diagnostics": {"reason": ["policy0"], "errors": [message]}}
    result = _result(bundle, outcome, 0)
    assert result.decision is Decision.DENY
    # an error in a known permit is Cedar's own skip: the Allow stands
    permit_error = {
        "errors": ["error while evaluating policy `policy0`: boom"],
        "reason": ["policy0"],
    }
    assert _result(bundle, {"decision": "Allow", "diagnostics": permit_error}, 0).decision is (
        Decision.ALLOW
    )


# ----------------------------------------------------------------- differential --


def test_every_corpus_policies_file_is_parsed_as_cedar_parses_it() -> None:
    # The corpus ships with the tests (testdata/cedar-conformance.tar.xz), read as the
    # conformance tests read it.
    archive = _read_archive(ARCHIVE)
    tests = [
        _load(archive, CORPUS, label, label) for label in _tests(archive, CORPUS, "corpus-tests")
    ]
    assert len(tests) == CORPUS_FILES
    policies_seen = 0
    for test in tests:
        text = test.policies.decode("utf-8")
        files = {
            "manifest.json": b'{"name": "c", "version": "1", "validation": "off"}',
            "schema.cedarschema": test.schema,
            "policies.cedar": test.policies,
        }
        bundle = compile_files(files)
        expected = cedar_view(text)
        assert bundle_view(bundle) == expected, test.label
        assert len(bundle.policy_set) == len(cedarpy.PolicySet.from_str(text)), test.label
        policies_seen += len(expected)
    assert policies_seen >= CORPUS_FILES  # each file holds at least one policy


_ID_MARK = "\x00id\x00"  # never drawn otherwise: replaced by unique @id values
_ALPHABET = ["a", " ", ";", "/", "//", '"', "\\", "@", "\r", "\n", "\r\n", "}", "é"]
_BREAKS = st.sampled_from(["\n", "\r\n", "\r"])
_chars = st.lists(st.sampled_from(_ALPHABET), max_size=6).map("".join)


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")


@st.composite
def _policy(draw: st.DrawFn) -> tuple[str, set[str]]:
    features: set[str] = set()
    parts = []
    brk = draw(_BREAKS)
    if draw(st.booleans()):
        parts.append(f'@id("{_ID_MARK}"){brk}')  # numbered once the bundle is drawn
    if draw(st.booleans()):
        note = draw(_chars)
        features |= {f"annotation holds {c!r}" for c in (";", "//", '"') if c in note}
        parts.append(f'@note("{_escape(note)}"){brk}')
    effect = draw(st.sampled_from(["permit", "forbid"]))
    principal = "principal == ?principal" if draw(st.booleans()) else "principal"
    if "?" in principal:
        features.add("template")
    parts.append(f"{effect}({principal}, action, resource)")
    if draw(st.booleans()):
        s = draw(_chars)
        features |= {f"string holds {c!r}" for c in (";", "//", '"') if c in s}
        parts.append(f' when {{ context.s == "{_escape(s)}" }}')
    parts.append(";")
    return "".join(parts), features


def _comment(text: str) -> str:
    return "//" + "".join(c for c in text if c not in "\r\n")


@st.composite
def _file(draw: st.DrawFn) -> tuple[str, int, set[str]]:
    features: set[str] = set()
    out = []
    count = 0
    for kind in draw(st.lists(st.sampled_from(["policy", "comment", "break"]), max_size=8)):
        if kind == "policy":
            text, more = draw(_policy())
            out.append(text)
            features |= more
            count += 1
        elif kind == "comment":
            out.append(_comment(draw(_chars)))
            brk = draw(_BREAKS)
            features.add(f"comment ended by {brk!r}")
            out.append(brk)
        else:
            out.append(draw(_BREAKS))
    if draw(st.booleans()):
        out.append(_comment(draw(_chars)))  # a comment at the end, no line break after it
        features.add("comment at end of file")
    return "".join(out), count, features


def test_generated_files_are_parsed_as_cedar_parses_them() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_file(), min_size=1, max_size=4))
    def check(generated: list[tuple[str, int, set[str]]]) -> None:
        numbered = itertools.count()
        generated = [
            (re.sub(_ID_MARK, lambda _: f"p-{next(numbered)}", text), count, features)
            for text, count, features in generated
        ]
        policies = {f"f{i}.cedar": text for i, (text, _, _) in enumerate(generated)}
        bundle = compile_files(bundle_files(policies, validation="off"))
        expected: list[tuple[str, str, bool, str | None]] = []
        first = 0
        for text, count, features in generated:
            view = cedar_view(text, first)
            assert len(view) == count  # the generator's intent agrees with Cedar
            expected += view
            first += count
            seen.update(features)
        assert bundle_view(bundle) == sorted(expected)
        assert [s.file for s in sorted(bundle.policies.values(), key=_order)] == [
            f"f{i}.cedar" for i, (_, count, _) in enumerate(generated) for _ in range(count)
        ]

    check()
    wanted = [
        *(f"comment ended by {b!r}" for b in ("\n", "\r\n", "\r")),
        "comment at end of file",
        "template",
        *(f"{where} holds {c!r}" for where in ("string", "annotation") for c in (";", "//", '"')),
    ]
    assert all(seen[w] >= 10 for w in wanted), seen


def _order(src: Any) -> int:
    return int(src.cedar_id.removeprefix("policy"))


def test_every_link_cedar_refuses_is_reported_on_its_line() -> None:
    good = {"template_id": "share", "new_id": "ok", "values": {"?principal": _user}}
    slot = {"template_id": "share", "new_id": "bad-slot", "values": {"?resource": _user}}
    uid = {"template_id": "share", "new_id": "bad-uid", "values": {"?principal": {"type": "::"}}}
    files = bundle_files({"t.cedar": TEMPLATE}, validation="off")
    files["links.json"] = (
        "[\n" + ",\n".join(json.dumps(x) for x in (good, slot, uid)) + "]"
    ).encode()
    with pytest.raises(BundleError) as err:
        compile_files(files)
    found = [(p.line, p.policy_id, p.message.split(":")[0]) for p in err.value.problems]
    assert found == [(3, "bad-slot", "[1]"), (4, "bad-uid", "[2]")]
