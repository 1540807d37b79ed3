"""Cedar's own conformance suites, run through the gRPC API of a real `pdp serve`.

Two suites of Cedar test files (see ../shared/conformance/*/README.md):

* `cedar/tests/*/*.json`: the hand-written integration tests (22 files, 74 requests);
* `cedar-corpus/corpus-tests/*.json`: a sample of the differential-fuzzing corpus
  (2,000 files, 16,000 requests).

Every test file becomes one tenant's bundle (manifest, schema, policies; validation
"off" where Cedar says the policies do not validate) in one `--bundles-dir`, served by
ONE server. Each request goes over gRPC with the file's entities as `entities_json`
and its context as `context_json`; decision, determining policies and erroring
policies must all match what Cedar expects.

The data folder is provided by CI; if it is missing the tests fail rather than skip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp._proto.v1 import value_pb2 as vpb
from pdp.bundle import compile_bundle
from pdp.bundle_files import BundleFiles
from pdp.config import TENANT_NAME
from pdp.errors import BundleError

from .support import REPO, ServerProcess, pdp_command, running_server

CONFORMANCE = REPO.parent / "shared" / "conformance"
HANDWRITTEN = CONFORMANCE / "cedar"
CORPUS = CONFORMANCE / "cedar-corpus"

HANDWRITTEN_FILES, HANDWRITTEN_REQUESTS = 22, 74
CORPUS_FILES, CORPUS_REQUESTS = 2_000, 16_000
ALL_REQUESTS = HANDWRITTEN_REQUESTS + CORPUS_REQUESTS  # 16,074
NOT_VALIDATING = 434  # corpus files with shouldValidate: false

POLICIES = "policies.cedar"
SCHEMA = "schema.cedarschema"
CLIENT_THREADS = 4
REPORT_FIRST = 20

_DECISIONS = {pb.DECISION_ALLOW: "allow", pb.DECISION_DENY: "deny"}


@dataclass(frozen=True, repr=False)
class ConformanceFile:
    """One Cedar test file with the three files it names."""

    name: str  # tenant-safe base name, e.g. "cedar-multi-1", "corpus-<sha1>"
    path: Path
    data: dict[str, Any]
    policies: bytes
    schema: bytes
    entities: str

    def __repr__(self) -> str:  # pytest prints fixture values: keep failures readable
        return f"<{self.label}: {len(self.data['requests'])} requests>"

    @property
    def label(self) -> str:
        return str(self.path.relative_to(CONFORMANCE))

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.data["requests"])

    def tenant(self, request: dict[str, Any]) -> str:
        # Request validation is a bundle setting, so each value gets its own bundle.
        return self.name if request.get("validateRequest", True) else f"{self.name}-noreqval"

    def bundle_files(self, *, strict: bool, validate_requests: bool = True) -> dict[str, bytes]:
        manifest: dict[str, Any] = {"name": self.name, "version": "1"}
        manifest["request_entities"] = "trusted"  # Cedar's model: each test sends its entities
        if not strict:
            manifest["validation"] = "off"
        if not validate_requests:
            manifest["validate_requests"] = False
        return {
            "manifest.json": json.dumps(manifest).encode(),
            SCHEMA: self.schema,
            POLICIES: self.policies,
        }


@dataclass(frozen=True, repr=False)
class Suites:
    handwritten: list[ConformanceFile]
    corpus: list[ConformanceFile]

    def __repr__(self) -> str:
        return f"<Suites: {len(self.handwritten)} hand-written, {len(self.corpus)} corpus files>"

    @property
    def all(self) -> list[ConformanceFile]:
        return [*self.handwritten, *self.corpus]


def _load(root: Path, path: Path, name: str) -> ConformanceFile:
    data = json.loads(path.read_text(encoding="utf-8"))
    return ConformanceFile(
        name=name,
        path=path,
        data=data,
        policies=(root / data["policies"]).read_bytes(),
        schema=(root / data["schema"]).read_bytes(),
        entities=(root / data["entities"]).read_text(encoding="utf-8"),
    )


@pytest.fixture(scope="module")
def suites() -> Suites:
    if not CONFORMANCE.is_dir():
        pytest.fail(
            f"Cedar conformance data not found at {CONFORMANCE} "
            "(expected ../shared/conformance beside the repository; CI always provides it)",
            pytrace=False,
        )
    handwritten = [
        _load(HANDWRITTEN, p, f"cedar-{p.parent.name}-{p.stem}")
        for p in sorted(HANDWRITTEN.glob("tests/*/*.json"))
    ]
    corpus = [
        _load(CORPUS, p, f"corpus-{p.stem}")
        for p in sorted(CORPUS.glob("corpus-tests/*.json"))
        if not p.name.endswith(".entities.json")
    ]
    assert len(handwritten) == HANDWRITTEN_FILES, f"hand-written test files: {len(handwritten)}"
    assert len(corpus) == CORPUS_FILES, f"corpus test files: {len(corpus)}"
    return Suites(handwritten, corpus)


@pytest.fixture(scope="module")
def bundles_dir(suites: Suites, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test file as a tenant's bundle (per request-validation setting it uses)."""
    root = tmp_path_factory.mktemp("conformance-bundles")
    for test in suites.all:
        for validate_requests in {r.get("validateRequest", True) for r in test.requests}:
            tenant = test.tenant({"validateRequest": validate_requests})
            assert TENANT_NAME.fullmatch(tenant), tenant
            bundle = root / tenant
            bundle.mkdir()
            files = test.bundle_files(
                strict=test.data["shouldValidate"], validate_requests=validate_requests
            )
            for name, content in files.items():
                (bundle / name).write_bytes(content)
    return root


@pytest.fixture(scope="module")
def conformance_server(bundles_dir: Path) -> Iterator[ServerProcess]:
    with running_server(["--bundles-dir", str(bundles_dir), "--no-watch"], timeout=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def conformance_stub(
    conformance_server: ServerProcess,
) -> Iterator[pb_grpc.AuthorizationServiceStub]:
    with conformance_server.channel() as channel:
        yield pb_grpc.AuthorizationServiceStub(channel)


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


def _via_check(stub: pb_grpc.AuthorizationServiceStub, test: ConformanceFile) -> Outcome:
    """One `Check` per request."""
    checked, mismatches = 0, []
    for request in test.requests:
        expected = _expected(request)
        try:
            response = stub.Check(
                pb.CheckRequest(
                    tenant=test.tenant(request),
                    principal=_uid(request["principal"]),
                    action=_uid(request["action"]),
                    resource=_uid(request["resource"]),
                    context_json=json.dumps(request["context"]),
                    entities_json=test.entities,
                ),
                timeout=30,
            )
        except grpc.RpcError as exc:
            got: Any = f"{exc.code().name}: {exc.details()}"
        else:
            got = _got(response)
        checked += 1
        if not (isinstance(got, dict) and _same(expected, got)):
            mismatches.append((test.label, request["description"], expected, got))
    return checked, mismatches


def _via_check_batch(stub: pb_grpc.AuthorizationServiceStub, test: ConformanceFile) -> Outcome:
    """One `CheckBatch` per test file and tenant, the file's entities given batch-wide."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for request in test.requests:
        by_tenant.setdefault(test.tenant(request), []).append(request)
    checked, mismatches = 0, []
    for tenant, requests in by_tenant.items():
        batch = pb.CheckBatchRequest(
            tenant=tenant,
            entities_json=test.entities,
            items=[
                pb.BatchItem(
                    principal=_uid(r["principal"]),
                    action=_uid(r["action"]),
                    resource=_uid(r["resource"]),
                    context_json=json.dumps(r["context"]),
                )
                for r in requests
            ],
        )
        try:
            results: list[Any] = list(stub.CheckBatch(batch, timeout=60).results)
        except grpc.RpcError as exc:
            results = [f"{exc.code().name}: {exc.details()}"] * len(requests)
        if len(results) != len(requests):
            results = [f"batch returned {len(results)} results for {len(requests)} items"] * len(
                requests
            )
        for request, result in zip(requests, results, strict=True):
            expected = _expected(request)
            got = result if isinstance(result, str) else _got(result)
            checked += 1
            if not (isinstance(got, dict) and _same(expected, got)):
                mismatches.append((test.label, request["description"], expected, got))
    return checked, mismatches


RPCS: dict[str, Callable[[pb_grpc.AuthorizationServiceStub, ConformanceFile], Outcome]] = {
    "Check": _via_check,
    "CheckBatch": _via_check_batch,
}


def _run(
    stub: pb_grpc.AuthorizationServiceStub, tests: list[ConformanceFile], rpc: str
) -> tuple[int, list[Mismatch]]:
    send = RPCS[rpc]
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        outcomes = list(pool.map(lambda t: send(stub, t), tests))
    return sum(n for n, _ in outcomes), [m for _, ms in outcomes for m in ms]


def _report(mismatches: list[Mismatch], checked: int) -> str:
    lines = [f"{len(mismatches)} of {checked} conformance requests disagree with Cedar:"]
    for label, description, expected, got in mismatches[:REPORT_FIRST]:
        lines.append(f"  {label} — {description}\n    expected {expected}\n    got      {got}")
    if len(mismatches) > REPORT_FIRST:
        lines.append(f"  ... and {len(mismatches) - REPORT_FIRST} more")
    return "\n".join(lines)


# --- decisions over gRPC --------------------------------------------------------------


def test_handwritten_suite_through_check(
    suites: Suites, conformance_stub: pb_grpc.AuthorizationServiceStub
) -> None:
    checked, mismatches = _run(conformance_stub, suites.handwritten, "Check")
    assert not mismatches, _report(mismatches, checked)
    assert checked == HANDWRITTEN_REQUESTS


@pytest.mark.slow
@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_all_suites_through_grpc(
    suites: Suites, conformance_stub: pb_grpc.AuthorizationServiceStub, rpc: str
) -> None:
    """Every request of both suites (16,074), over `Check` or per-file `CheckBatch`."""
    handwritten, mismatches = _run(conformance_stub, suites.handwritten, rpc)
    corpus, corpus_mismatches = _run(conformance_stub, suites.corpus, rpc)
    mismatches += corpus_mismatches
    assert not mismatches, _report(mismatches, handwritten + corpus)
    assert (handwritten, corpus) == (HANDWRITTEN_REQUESTS, CORPUS_REQUESTS)
    assert handwritten + corpus == ALL_REQUESTS == 16_074


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
