"""Read a bundle's policy files with Cedar, one file at a time, into one policy set.

Each `.cedar` file is parsed by Cedar on its own, so nothing in one file (a `//` comment
left open at its end, say) can change how another is read. Cedar numbers a file's
policies `policy0`, `policy1`, ... in order; the bundle numbers them across files in
sorted path order (the bundle's i-th policy is `policy{i}`), so each id names exactly one
(file, policy). Count, ids, effects, annotations and template-ness are all Cedar's parse
(its JSON policy format); `pdp.policy_text` only places messages on lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from pdp.errors import BundleProblem
from pdp.policy_text import split_statements

_PREFIX = "policy"  # Cedar's positional ids: policy0, policy1, ...


@dataclass(frozen=True, slots=True)
class ParsedPolicy:
    cedar_id: str  # its id in the bundle's policy set
    line: int | None  # where it starts, when the locator's count agrees with Cedar's
    # The policy (or template) in Cedar's JSON form, kept as text: one object per policy
    # rather than dozens keeps the collector's full passes short in a large bundle.
    est_json: str
    effect: str  # "permit" | "forbid"
    id_annotation: str | None  # its @id, if any
    is_template: bool


@dataclass(frozen=True, slots=True)
class ParsedFile:
    name: str
    text: str
    policies: tuple[ParsedPolicy, ...]  # in Cedar's order: policies[j] is its `policy{j}`

    def cedar_id(self, local_id: str) -> str | None:
        """The bundle id of the policy Cedar calls `local_id` when it parses this file alone."""
        index = _index(local_id)
        return (
            None if index is None or index >= len(self.policies) else self.policies[index].cedar_id
        )


def parse_files(
    texts: Sequence[tuple[str, str]], problems: list[BundleProblem]
) -> list[ParsedFile]:
    """Every file Cedar parses; for each it does not, its problems (located where possible)."""
    parsed: list[ParsedFile] = []
    first = 0
    for name, text in texts:
        try:
            # One Cedar call per file, never one per policy.
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            problems.extend(parse_errors(name, text, str(exc)))
            continue
        found = _numbered(est)
        if found is None:  # not Cedar's positional numbering: attribution would be unsound
            problems.append(BundleProblem(name, "Cedar returned policy ids other than policy0..N"))
            continue
        statements = split_statements(text)
        lines: list[int | None] = (
            [s.line for s in statements] if len(statements) == len(found) else [None] * len(found)
        )
        policies = tuple(
            ParsedPolicy(
                f"{_PREFIX}{first + j}",
                lines[j],
                json.dumps(policy, separators=(",", ":")),
                policy["effect"],
                (policy.get("annotations") or {}).get("id"),
                is_template,
            )
            for j, (policy, is_template) in enumerate(found)
        )
        parsed.append(ParsedFile(name, text, policies))
        first += len(policies)
    return parsed


def policy_set_of(files: Sequence[ParsedFile]) -> Any:
    """One `cedarpy.PolicySet` of every file's policies under their bundle ids."""
    policies = [p for f in files for p in f.policies]
    return policy_set_from(
        [(p.cedar_id, p.est_json) for p in policies if not p.is_template],
        [(p.cedar_id, p.est_json) for p in policies if p.is_template],
    )


def policy_set_from(
    statics: Sequence[tuple[str, str]], templates: Sequence[tuple[str, str]]
) -> Any:
    """A `cedarpy.PolicySet` of (id, Cedar JSON text) policies and templates, built by one
    Cedar call that releases the GIL; the document is joined from each policy's text, so
    no single step holds the GIL to serialise the whole set."""

    def members(items: Sequence[tuple[str, str]]) -> str:
        return ",".join(f"{json.dumps(k)}:{v}" for k, v in items)

    document = (
        f'{{"staticPolicies":{{{members(statics)}}},'
        f'"templates":{{{members(templates)}}},"templateLinks":[]}}'
    )
    return cedarpy.PolicySet.from_json_str(document, release_gil=True)


def validate(files: Sequence[ParsedFile], schema: Any) -> Iterator[tuple[str, str | None, str]]:
    """(file, bundle id or None, Cedar's message) for each validation error, file by file."""
    for f in files:
        if not f.policies:
            continue
        result = cedarpy.validate_policies(f.text, schema, release_gil=True)
        for err in result.errors:
            yield f.name, f.cedar_id(err.policy_id), err.error


MAX_PARSE_ERRORS = 20  # per file: enough to act on; a file of junk must not cost more


def parse_errors(name: str, text: str, message: str) -> list[BundleProblem]:
    """Cedar's parse errors of a file it refused, each on its statement's line.

    Cedar names no position, so each located statement is parsed alone (on this error
    path only) to find which fail; if none fails alone, the file's own error is reported.
    At most MAX_PARSE_ERRORS are reported: a 60 KB file of `x;` was 20,000 problems, a
    1 MB report logged at every reload attempt.
    """
    found: list[BundleProblem] = []
    for stmt in split_statements(text):
        if len(found) == MAX_PARSE_ERRORS:
            found.append(BundleProblem(name, f"parse error: more than {MAX_PARSE_ERRORS} here"))
            break
        try:
            cedarpy.PolicySet.from_str(stmt.text, release_gil=True)
        except ValueError as exc:
            what = "parse error" if stmt.text.rstrip().endswith(";") else _UNTERMINATED
            found.append(BundleProblem(name, f"{what}: {exc}", stmt.line))
    return found or [BundleProblem(name, f"parse error: {message}")]


_UNTERMINATED = "unterminated policy (missing `;`)"


def _numbered(est: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], bool]] | None:
    """The file's policies in Cedar's order, or None unless ids are exactly policy0..N."""
    by_index: dict[int, tuple[Mapping[str, Any], bool]] = {}
    for key, is_template in (("staticPolicies", False), ("templates", True)):
        for local_id, policy in (est.get(key) or {}).items():
            index = _index(local_id)
            if index is None or index in by_index:
                return None
            by_index[index] = (policy, is_template)
    if est.get("templateLinks") or sorted(by_index) != list(range(len(by_index))):
        return None
    return [by_index[i] for i in range(len(by_index))]


def _index(local_id: str) -> int | None:
    digits = local_id[len(_PREFIX) :]
    if (
        not local_id.startswith(_PREFIX)
        or not (digits.isascii() and digits.isdigit())
        or digits != str(int(digits))
    ):
        return None
    return int(digits)
