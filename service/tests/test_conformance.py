"""Cedar's own conformance suites, run through the gRPC API of a real `pdp serve`.

Two suites of Cedar test files, shipped as `testdata/cedar-conformance.tar.xz` (built
from Cedar's repositories by `scripts/build_conformance_archive.py`; provenance, LICENSE
and NOTICE inside it):

* `cedar/tests/*/*.json`: the hand-written integration tests (22 files, 74 requests);
* `cedar-corpus/corpus-tests/*.json`: a sample of the differential-fuzzing corpus
  (2,000 files, 16,000 requests).

Every test file becomes one tenant's bundle (manifest, schema, policies; validation
"off" where Cedar says the policies do not validate) in one `--bundles-dir`, served by
ONE server, once per pass; decision, determining policies and erroring policies must
all match what Cedar expects. The passes (`PASSES`) send each request:

* `entities_json`: with the file's entities as request `entities_json`, its context as
  `context_json` (over `Check` and over per-file `CheckBatch`);
* `base_entities`: to a bundle whose `entities.json` holds the file's entities, with no
  request entities (the bundle's base entities, as Cedar sees them);
* `typed_context`: with the context as typed `context` values (Cedar JSON converted with
  the schema's help, see `cedar_values.py`);
* `forbid_errors_skip`: as `entities_json`, to bundles with `"forbid_errors": "skip"`.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cedarpy
import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import compile_bundle
from pdp.bundle_files import BundleFiles
from pdp.errors import BundleError
from pdp.model import TENANT_NAME

from . import cedar_values
from .support import TESTDATA, ServerProcess, pdp_command, running_server

ARCHIVE = TESTDATA / "cedar-conformance.tar.xz"
HANDWRITTEN, CORPUS = "cedar", "cedar-corpus"  # the archive's two folders
PROVENANCE = ("LICENSE", "NOTICE", "README.md")  # in each folder: the data travels with them
NAMED = ("policies", "schema", "entities")  # the files a test file names

HANDWRITTEN_FILES, HANDWRITTEN_REQUESTS = 22, 74
CORPUS_FILES, CORPUS_REQUESTS = 2_000, 16_000
ALL_REQUESTS = HANDWRITTEN_REQUESTS + CORPUS_REQUESTS  # 16,074
NOT_VALIDATING = 434  # corpus files with shouldValidate: false
# Requests whose context the proto's typed values cannot carry (a datetime written as
# Cedar's offset(datetime, duration), beyond any datetime string): left out of typed_context.
UNEXPRESSIBLE_CONTEXTS = 10

POLICIES = "policies.cedar"
SCHEMA = "schema.cedarschema"
CLIENT_THREADS = 4
REPORT_FIRST = 20

_DECISIONS = {pb.DECISION_ALLOW: "allow", pb.DECISION_DENY: "deny"}


@dataclass(frozen=True)
class Pass:
    """One way of sending every conformance request; each pass has its own bundles."""

    tenant_suffix: str = ""
    base_entities: bool = False  # the file's entities in the bundle, none in the request
    typed_context: bool = False  # context as typed `context` values, not `context_json`
    forbid_errors: str = "deny"


PASSES = {
    "entities_json": Pass(),
    "base_entities": Pass("-base", base_entities=True),
    "typed_context": Pass(typed_context=True),  # the entities_json bundles
    "forbid_errors_skip": Pass("-skip", forbid_errors="skip"),
}


@dataclass(frozen=True, repr=False)
class ConformanceFile:
    """One Cedar test file with the three files it names."""

    name: str  # tenant-safe base name, e.g. "cedar-multi-1", "corpus-<sha1>"
    label: str  # its path in the archive, e.g. "cedar/tests/multi/1.json"
    data: dict[str, Any]
    policies: bytes
    schema: bytes
    entities: str

    def __repr__(self) -> str:  # pytest prints fixture values: keep failures readable
        return f"<{self.label}: {len(self.data['requests'])} requests>"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.data["requests"])

    def tenant(self, request: dict[str, Any], pass_: Pass = PASSES["entities_json"]) -> str:
        # Request validation is a bundle setting, so each value gets its own bundle.
        noreqval = "" if request.get("validateRequest", True) else "-noreqval"
        return f"{self.name}{noreqval}{pass_.tenant_suffix}"

    def bundle_files(
        self,
        *,
        strict: bool,
        validate_requests: bool = True,
        pass_: Pass = PASSES["entities_json"],
    ) -> dict[str, bytes]:
        manifest: dict[str, Any] = {"name": self.name, "version": "1"}
        if not pass_.base_entities:
            # Cedar's model: each test sends its entities. The base-entities pass keeps the
            # default (no request entities), so the safe setting is compared with Cedar too.
            manifest["request_entities"] = "trusted"
        if not strict:
            manifest["validation"] = "off"
        if not validate_requests:
            manifest["validate_requests"] = False
        if pass_.forbid_errors != "deny":
            manifest["forbid_errors"] = pass_.forbid_errors
        files = {
            "manifest.json": json.dumps(manifest).encode(),
            SCHEMA: self.schema,
            POLICIES: self.policies,
        }
        if pass_.base_entities:
            files["entities.json"] = self.entities.encode()
        return files


@dataclass(frozen=True, repr=False)
class Suites:
    handwritten: list[ConformanceFile]
    corpus: list[ConformanceFile]

    def __repr__(self) -> str:
        return f"<Suites: {len(self.handwritten)} hand-written, {len(self.corpus)} corpus files>"

    @property
    def all(self) -> list[ConformanceFile]:
        return [*self.handwritten, *self.corpus]


def _read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:xz") as tar:
        return {
            m.name: extracted.read()
            for m in tar
            if m.isfile() and (extracted := tar.extractfile(m)) is not None
        }


def _load(files: Mapping[str, bytes], folder: str, label: str, name: str) -> ConformanceFile:
    data = json.loads(files[label])

    def named(key: str) -> bytes:  # paths in a test file are relative to its folder
        return files[f"{folder}/{data[key]}"]

    return ConformanceFile(
        name=name,
        label=label,
        data=data,
        policies=named("policies"),
        schema=named("schema"),
        entities=named("entities").decode("utf-8"),
    )


def _tests(files: Mapping[str, bytes], folder: str, subdir: str) -> list[str]:
    prefix = f"{folder}/{subdir}/"
    return sorted(
        n
        for n in files
        if n.startswith(prefix) and n.endswith(".json") and not n.endswith(".entities.json")
    )


@pytest.fixture(scope="module")
def suites() -> Suites:
    files = _read_archive(ARCHIVE)
    handwritten = [
        _load(files, HANDWRITTEN, label, f"cedar-{path.parent.name}-{path.stem}")
        for label in _tests(files, HANDWRITTEN, "tests")
        if (path := PurePosixPath(label))
    ]
    corpus = [
        _load(files, CORPUS, label, "corpus-" + PurePosixPath(label).stem)
        for label in _tests(files, CORPUS, "corpus-tests")
    ]
    assert len(handwritten) == HANDWRITTEN_FILES, f"hand-written test files: {len(handwritten)}"
    assert len(corpus) == CORPUS_FILES, f"corpus test files: {len(corpus)}"
    # The archive holds what the tests read and its provenance, nothing else.
    used = {f"{folder}/{name}" for folder in (HANDWRITTEN, CORPUS) for name in PROVENANCE}
    for test in [*handwritten, *corpus]:
        folder = test.label.split("/", 1)[0]
        used |= {test.label, *(f"{folder}/{test.data[k]}" for k in NAMED)}
    assert used == set(files), sorted(set(files) ^ used)[:REPORT_FIRST]
    return Suites(handwritten, corpus)


@pytest.fixture(scope="module")
def bundles_dir(suites: Suites, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test file as a tenant's bundle, per request-validation setting and pass."""
    root = tmp_path_factory.mktemp("conformance-bundles")
    passes = {p.tenant_suffix: p for p in PASSES.values()}.values()  # one set of bundles each
    for test, pass_ in ((t, p) for t in suites.all for p in passes):
        for validate_requests in {r.get("validateRequest", True) for r in test.requests}:
            tenant = test.tenant({"validateRequest": validate_requests}, pass_)
            assert TENANT_NAME.fullmatch(tenant), tenant
            bundle = root / tenant
            bundle.mkdir()
            files = test.bundle_files(
                strict=test.data["shouldValidate"],
                validate_requests=validate_requests,
                pass_=pass_,
            )
            for name, content in files.items():
                (bundle / name).write_bytes(content)
    return root


@pytest.fixture(scope="module")
def conformance_server(bundles_dir: Path) -> Iterator[ServerProcess]:
    # Cedar's corpus sends up to 120 parent references in one request: above the default cap
    # (`max_request_entity_parents`, there for Cedar's ~n^3 cost of a chain), so raised.
    serve = [
        "--bundles-dir",
        str(bundles_dir),
        "--no-watch",
        "--max-request-entity-parents",
        "1000",
    ]
    with running_server(serve, timeout=600) as srv:
        yield srv


@pytest.fixture(scope="module")
def conformance_stub(
    conformance_server: ServerProcess,
) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    with conformance_server.channel() as channel:
        yield pb_grpc.AuthorizationServiceStub(channel)


Typed = dict[tuple[str, int], dict[str, vpb.Value] | None]  # (file, request) -> context


@dataclass(frozen=True)
class TypedContexts:
    contexts: Typed
    retyped: int  # implicit values Cedar read as an extension or entity, made explicit


@pytest.fixture(scope="module")
def typed_contexts(suites: Suites) -> TypedContexts:
    """Every request's context as typed values (None where the proto cannot carry it)."""
    contexts: Typed = {}
    retyped = 0
    for test in suites.all:
        # Parsed only for a file with some implicit value (most corpus files have none).
        schema = functools.cache(
            functools.partial(cedarpy.Schema.from_str, test.schema.decode("utf-8"))
        )
        for i, request in enumerate(test.requests):
            validated = request.get("validateRequest", True)
            try:
                typed, n = cedar_values.typed_context(request, schema if validated else None)
            except cedar_values.Unexpressible:
                contexts[test.label, i] = None
                continue
            contexts[test.label, i], retyped = typed, retyped + n
    return TypedContexts(contexts, retyped)


# --- sending requests and comparing ------------------------------------------------


def _uid(value: dict[str, Any]) -> vpb.EntityUid:
    value = value.get("__entity", value)
    return vpb.EntityUid(type=value["type"], id=value["id"])


def _expected(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision": request["decision"],
        "reason": sorted(request["reason"]),
        "errors": sorted(request["errors"]),
    }


def _got(response: pb.CheckResponse) -> dict[str, Any]:
    return {
        "decision": _DECISIONS.get(response.decision, pb.Decision.Name(response.decision)),
        "reason": sorted(response.determining_policies),
        "errors": sorted({e.policy_id for e in response.errors}),
    }


def _same(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    return (
        expected["decision"] == got["decision"]
        and set(expected["reason"]) == set(got["reason"])
        and set(expected["errors"]) == set(got["errors"])
    )


Mismatch = tuple[str, str, dict[str, Any], Any]
Outcome = tuple[int, list[Mismatch]]  # requests checked, mismatches


@dataclass(frozen=True)
class Sender:
    """What a pass sends for one test file: tenant, entities and each request's context."""

    stub: pb_grpc.AuthorizationServiceStub
    pass_: Pass
    typed: Typed

    def entities(self, test: ConformanceFile) -> dict[str, Any]:
        return {} if self.pass_.base_entities else {"entities_json": test.entities}

    def requests(self, test: ConformanceFile) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(request, its principal/action/resource/context fields), sendable ones only."""
        out = []
        for i, request in enumerate(test.requests):
            fields: dict[str, Any] = {
                "principal": _uid(request["principal"]),
                "action": _uid(request["action"]),
                "resource": _uid(request["resource"]),
            }
            if not self.pass_.typed_context:
                fields["context_json"] = json.dumps(request["context"])
            elif (typed := self.typed[test.label, i]) is None:
                continue  # counted by test_typed_contexts_reach_extensions
            else:
                fields["context"] = typed
            out.append((request, fields))
        return out


def _compare(test: ConformanceFile, request: dict[str, Any], got: Any) -> list[Mismatch]:
    expected = _expected(request)
    if isinstance(got, dict) and _same(expected, got):
        return []
    return [(test.label, request["description"], expected, got)]


def _via_check(send: Sender, test: ConformanceFile) -> Outcome:
    """One `Check` per request."""
    checked, mismatches = 0, []
    for request, fields in send.requests(test):
        try:
            response = send.stub.Check(
                pb.CheckRequest(
                    tenant=test.tenant(request, send.pass_), **fields, **send.entities(test)
                ),
                timeout=30,
            )
        except grpc.RpcError as exc:
            got: Any = f"{exc.code().name}: {exc.details()}"
        else:
            got = _got(response)
        checked += 1
        mismatches += _compare(test, request, got)
    return checked, mismatches


def _via_check_batch(send: Sender, test: ConformanceFile) -> Outcome:
    """One `CheckBatch` per test file and tenant, the file's entities given batch-wide."""
    by_tenant: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for request, fields in send.requests(test):
        by_tenant.setdefault(test.tenant(request, send.pass_), []).append((request, fields))
    checked, mismatches = 0, []
    for tenant, requests in by_tenant.items():
        batch = pb.CheckBatchRequest(
            tenant=tenant,
            items=[pb.BatchItem(**fields) for _, fields in requests],
            **send.entities(test),
        )
        try:
            results: list[Any] = list(send.stub.CheckBatch(batch, timeout=60).results)
        except grpc.RpcError as exc:
            results = [f"{exc.code().name}: {exc.details()}"] * len(requests)
        if len(results) != len(requests):
            results = [f"batch returned {len(results)} results for {len(requests)} items"] * len(
                requests
            )
        for (request, _), result in zip(requests, results, strict=True):
            checked += 1
            mismatches += _compare(
                test, request, result if isinstance(result, str) else _got(result)
            )
    return checked, mismatches


RPCS: dict[str, Callable[[Sender, ConformanceFile], Outcome]] = {
    "Check": _via_check,
    "CheckBatch": _via_check_batch,
}


def _run(send: Sender, tests: list[ConformanceFile], rpc: str) -> tuple[int, list[Mismatch]]:
    via = RPCS[rpc]
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        outcomes = list(pool.map(lambda t: via(send, t), tests))
    return sum(n for n, _ in outcomes), [m for _, ms in outcomes for m in ms]


def _report(mismatches: list[Mismatch], checked: int) -> str:
    lines = [f"{len(mismatches)} of {checked} conformance requests disagree with Cedar:"]
    for label, description, expected, got in mismatches[:REPORT_FIRST]:
        lines.append(f"  {label} — {description}\n    expected {expected}\n    got      {got}")
    if len(mismatches) > REPORT_FIRST:
        lines.append(f"  ... and {len(mismatches) - REPORT_FIRST} more")
    return "\n".join(lines)


# --- decisions over gRPC --------------------------------------------------------------


@pytest.mark.parametrize("pass_name", PASSES)
def test_handwritten_suite_through_check(
    suites: Suites,
    conformance_stub: pb_grpc.AuthorizationServiceStub,
    typed_contexts: TypedContexts,
    pass_name: str,
) -> None:
    send = Sender(conformance_stub, PASSES[pass_name], typed_contexts.contexts)
    checked, mismatches = _run(send, suites.handwritten, "Check")
    assert not mismatches, _report(mismatches, checked)
    assert checked == HANDWRITTEN_REQUESTS


# The pass over Check and over CheckBatch, each other pass over CheckBatch (the cheaper
# RPC: one call per file) to keep the run short.
RUNS = [("entities_json", "Check"), *((name, "CheckBatch") for name in PASSES)]


@pytest.mark.slow
@pytest.mark.parametrize(("pass_name", "rpc"), RUNS)
def test_all_suites_through_grpc(
    suites: Suites,
    conformance_stub: pb_grpc.AuthorizationServiceStub,
    typed_contexts: TypedContexts,
    pass_name: str,
    rpc: str,
) -> None:
    """Every request of both suites (16,074), per pass, over `Check` or per-file `CheckBatch`."""
    send = Sender(conformance_stub, PASSES[pass_name], typed_contexts.contexts)
    handwritten, mismatches = _run(send, suites.handwritten, rpc)
    corpus, corpus_mismatches = _run(send, suites.corpus, rpc)
    mismatches += corpus_mismatches
    assert not mismatches, _report(mismatches, handwritten + corpus)
    left_out = UNEXPRESSIBLE_CONTEXTS if send.pass_.typed_context else 0
    assert (handwritten, corpus) == (HANDWRITTEN_REQUESTS, CORPUS_REQUESTS - left_out)
    assert handwritten + corpus + left_out == ALL_REQUESTS == 16_074


def test_typed_contexts_reach_extensions(typed_contexts: TypedContexts) -> None:
    """The typed pass must exercise schema-typed values, and leave out only what it must."""
    unexpressible = [k for k, v in typed_contexts.contexts.items() if v is None]
    assert len(typed_contexts.contexts) == ALL_REQUESTS
    assert len(unexpressible) == UNEXPRESSIBLE_CONTEXTS, unexpressible[:REPORT_FIRST]
    assert typed_contexts.retyped > 0


# --- strict validation ----------------------------------------------------------------


def _compile_strict(test: ConformanceFile) -> BundleError | None:
    try:
        compile_bundle(BundleFiles(test.label, test.bundle_files(strict=True)))
    except BundleError as exc:
        return exc
    return None


@pytest.mark.slow
def test_strict_validation_agrees_with_should_validate(suites: Suites) -> None:
    """shouldValidate false: refused, located in policies.cedar; true: loads."""
    refused_ok, loaded_ok, wrong = 0, 0, []
    for test in suites.all:
        error = _compile_strict(test)
        if test.data["shouldValidate"]:
            if error is None:
                loaded_ok += 1
            else:
                wrong.append(f"{test.label}: should validate but was refused:\n{error.message}")
        elif error is None:
            wrong.append(f"{test.label}: should not validate but loaded under strict validation")
        elif not any(p.file == POLICIES and p.line for p in error.problems):
            problems = "; ".join(str(p) for p in error.problems)
            wrong.append(f"{test.label}: refused, but no problem names {POLICIES}:LINE: {problems}")
        else:
            refused_ok += 1
    assert not wrong, f"{len(wrong)} test files:\n" + "\n".join(wrong[:REPORT_FIRST])
    assert refused_ok == NOT_VALIDATING
    assert loaded_ok == HANDWRITTEN_FILES + CORPUS_FILES - NOT_VALIDATING


def test_server_refuses_to_start_on_a_bundle_failing_strict_validation(
    suites: Suites, tmp_path: Path
) -> None:
    test = next(t for t in suites.corpus if not t.data["shouldValidate"])
    error = _compile_strict(test)
    assert error is not None
    problem = next(p for p in error.problems if p.file == POLICIES and p.line)
    bundle = tmp_path / "strict"
    bundle.mkdir()
    for name, content in test.bundle_files(strict=True).items():
        (bundle / name).write_bytes(content)

    proc = subprocess.run(
        [
            *pdp_command(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bundle",
            f"strict={bundle}",
            "--no-watch",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "listening on" not in output
    assert "cannot start" in proc.stderr, output
    assert f"{POLICIES}:{problem.line}" in proc.stderr, output
    assert f"[{problem.policy_id}]" in proc.stderr, output
    assert problem.message.splitlines()[0] in proc.stderr, output
