"""Mutation testing: disable or flip each policy, unlink each link, rerun, report survivors.

A mutant that no test notices marks a policy whose behaviour no test pins down.
Mutants are built from the bundle's files in memory and compiled like any bundle
(strict validation included). "Removing" a policy appends `when { false }` to it,
so that it never applies while every other policy keeps its position and id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pdp.bundle import LINKS, Bundle, PolicySource, compile_bundle
from pdp.bundle_files import BundleFiles
from pdp.errors import BundleError
from pdp.policy_text import split_statements
from pdp.policytest.model import Case, Outcome, Status
from pdp.policytest.runner import decide, judge

MAX_KILLERS = 3  # tests named per killed mutant


@dataclass(frozen=True)
class Mutant:
    kind: str  # "remove" | "flip" (a policy or template) | "unlink" (a template link)
    policy_id: str
    file: str
    line: int | None
    files: BundleFiles = field(repr=False, compare=False)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{self.kind} {self.policy_id} ({where})"


@dataclass(frozen=True)
class MutantResult:
    mutant: Mutant
    status: str  # "killed" | "survived" | "invalid" (the mutant bundle does not compile)
    killed_by: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Mutation:
    results: tuple[MutantResult, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def survivors(self) -> tuple[MutantResult, ...]:
        return tuple(r for r in self.results if r.status == "survived")


def mutants(files: BundleFiles, bundle: Bundle) -> Iterator[Mutant]:
    for src in sorted(bundle.policies.values(), key=lambda s: (s.file, s.line or 0, s.policy_id)):
        if src.template_id is not None:
            yield Mutant("unlink", src.policy_id, LINKS, None, _unlink(files, src.policy_id))
            continue
        text = files.text(src.file)
        start, stmt = _statement(text, src)
        removed = stmt[: stmt.rstrip().rfind(";")] + " when { false };"
        at = start + _effect_at(stmt)
        flipped = text[:at] + ("forbid" if src.effect == "permit" else "permit") + text[at + 6 :]
        for kind, new in (
            ("remove", text[:start] + removed + text[start + len(stmt) :]),
            ("flip", flipped),
        ):
            yield Mutant(kind, src.policy_id, src.file, src.line, _with(files, src.file, new))


def run_mutation(
    files: BundleFiles,
    bundle: Bundle,
    cases: Sequence[Case],
    baseline: Sequence[Outcome],
    annotations: Mapping[str, Mapping[str, str]],
) -> Mutation:
    """Each mutant is killed when a test that passes on the bundle does not pass on it."""
    started = time.perf_counter()
    passing = [c for c, o in zip(cases, baseline, strict=True) if o.status is Status.PASS]
    results: list[MutantResult] = []
    for mutant in mutants(files, bundle):
        try:
            mutated = compile_bundle(mutant.files)
        except BundleError as exc:
            detail = "; ".join(str(p) for p in exc.problems)
            results.append(MutantResult(mutant, "invalid", detail=detail))
            continue
        killers = [
            c.id
            for c, v in zip(passing, decide(mutated, passing), strict=True)
            if judge(c, v, annotations).status is not Status.PASS
        ]
        status = "killed" if killers else "survived"
        results.append(MutantResult(mutant, status, tuple(killers[:MAX_KILLERS])))
    return Mutation(tuple(results), time.perf_counter() - started)


def _statement(text: str, src: PolicySource) -> tuple[int, str]:
    """The offset and text of the statement the bundle compiled `src` from."""
    offset = 0
    for stmt in split_statements(text):
        if stmt.line == src.line:
            return offset, stmt.text
        offset += len(stmt.text)
    raise LookupError(f"{src.file}:{src.line}: statement of {src.policy_id} not found")


def _effect_at(stmt: str) -> int:
    """Offset of the effect keyword, past comments and annotations (`@name("text")`)."""
    i, n = 0, len(stmt)
    while i < n:
        if stmt[i].isspace():
            i += 1
        elif stmt.startswith("//", i):
            end = stmt.find("\n", i)
            i = n if end < 0 else end
        elif stmt[i] == "@":
            i += 1
            while i < n and (stmt[i].isalnum() or stmt[i] == "_"):
                i += 1
            j = i
            while j < n and stmt[j].isspace():
                j += 1
            if j < n and stmt[j] == "(":
                i = _string_end(stmt, stmt.index('"', j)) + 1
                i = stmt.index(")", i) + 1
        elif stmt.startswith(("permit", "forbid"), i):
            return i
        else:
            break
    raise LookupError(f"no permit/forbid keyword in {stmt.strip()[:60]!r}")


def _string_end(text: str, start: int) -> int:
    """Index of the closing quote of the string literal opening at `start`."""
    i = start + 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i


def _with(files: BundleFiles, name: str, text: str) -> BundleFiles:
    return BundleFiles(f"{files.source} (mutant)", {**files.files, name: text.encode("utf-8")})


def _unlink(files: BundleFiles, link_id: str) -> BundleFiles:
    links = json.loads(files.text(LINKS))
    kept = [link for link in links if link.get("new_id") != link_id]
    return _with(files, LINKS, json.dumps(kept, indent=2))
