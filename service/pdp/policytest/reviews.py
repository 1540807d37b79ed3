"""The review ledger: which form of each policy was reviewed, and when.

`pdp lint` must not fail CI just because the calendar moved on (a `stale-review` is
advisory unless `--strict`); what fails is a policy that changed without a fresh
review. The ledger (`policy_tests/reviews.json` beside the bundle, checked in) maps each
policy id to the sha256 of Cedar's form of it (see `text_sha256`) and its `@reviewed`
date when the ledger was written by `pdp lint --record-reviews`. A policy then fails
`changed-without-review` when it is missing from the ledger, or its hash differs while
its `@reviewed` date is not newer than the ledger's. Nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdp.bundle import Bundle, PolicySource

LEDGER = Path("policy_tests") / "reviews.json"  # relative to the bundle's parent folder
_SHA256 = r"^[0-9a-f]{64}$"


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=_SHA256)
    reviewed: date | None  # the @reviewed date recorded with this text (None: none valid)


class Ledger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle: str  # the manifest name: a ledger is never applied to another bundle
    policies: dict[str, Entry]


class LedgerError(ValueError):
    """The ledger file is unreadable, malformed, or for another bundle."""


def default_ledger(bundle_path: Path) -> Path:
    return bundle_path.resolve().parent / LEDGER


def text_sha256(src: PolicySource) -> str:
    """sha256 of the policy as Cedar parsed it (its JSON form), less its `@reviewed`.

    Cedar's form rather than the file's bytes: what needs a fresh review is a change to
    what Cedar evaluates (or to another annotation, such as `@owner`), not to a comment
    or the layout, and the ledger must not hinge on a second reading of policy files.
    Removing `@reviewed` lets the review date change without changing the hash.
    """
    est = dict(src.est)
    notes = {k: v for k, v in (est.get("annotations") or {}).items() if k != "reviewed"}
    est["annotations"] = notes
    canonical = json.dumps(est, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def reviewed_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value or "")
    except ValueError:
        return None  # reported by the invalid-reviewed / missing-reviewed rules


def load(path: Path, bundle: Bundle) -> Ledger:
    try:
        ledger = Ledger.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the review ledger: {exc.strerror}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise LedgerError(f"{path}: {where}: {first['msg']}") from exc
    if ledger.bundle != bundle.manifest.name:
        raise LedgerError(
            f"{path}: the ledger is for bundle {ledger.bundle!r}, not {bundle.manifest.name!r}"
        )
    return ledger


def record(path: Path, bundle: Bundle, notes: Mapping[str, Mapping[str, str]]) -> int:
    """Write the ledger for every policy and template of `bundle`; returns how many.

    `notes` holds each policy's annotations, by cedar id (the caller has them parsed).
    """
    policies = {
        src.policy_id: Entry(
            sha256=text_sha256(src), reviewed=reviewed_date(notes[src.cedar_id].get("reviewed"))
        )
        for src in _reviewable(bundle)
    }
    ledger = Ledger(bundle=bundle.manifest.name, policies=policies)
    body = ledger.model_dump(mode="json")
    path.parent.mkdir(parents=True, exist_ok=True)
    # One line per policy, sorted: a review shows up in a diff as the lines it touched.
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return len(policies)


def check(
    ledger: Ledger,
    ledger_path: Path,
    src: PolicySource,
    reviewed: str | None,
    add: Callable[[str, str], None],
) -> None:
    """Report `src` if it changed since the ledger without a newer @reviewed date."""
    entry = ledger.policies.get(src.policy_id)
    how = "review it, update @reviewed and run `pdp lint --record-reviews`"
    if entry is None:
        add("changed-without-review", f"not in the review ledger {ledger_path}: {how}")
        return
    if entry.sha256 == text_sha256(src):
        return
    current = reviewed_date(reviewed)
    if current is not None and (entry.reviewed is None or current > entry.reviewed):
        # Reviewed since: fine, but until recorded a later change would go unnoticed.
        add(
            "review-not-recorded",
            f"changed and reviewed on {current}, after the ledger's {entry.reviewed}: "
            "run `pdp lint --record-reviews`",
        )
        return
    add(
        "changed-without-review",
        f"changed (as Cedar parses it) since the review of {entry.reviewed} in {ledger_path}, "
        f"but @reviewed is {reviewed or 'missing'}: {how}",
    )


def _reviewable(bundle: Bundle) -> Iterable[PolicySource]:
    """Policies and templates (a link is reviewed as its template)."""
    return (s for s in bundle.policies.values() if s.template_id is None)
