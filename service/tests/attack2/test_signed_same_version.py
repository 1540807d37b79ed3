"""attack2: no downgrade compares versions only. A validly signed bundle with the same
version as the one served (or one that compares equal: `1.1.0+x`, `01.1.0`, `1.1`) but
other content is admitted, at reload and across a restart: a superseded signed build of
a version (say one re-signed after a policy fix) replays freely. The version record holds
no digest, so nothing can tell the two builds apart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pdp._proto.v1 import authorization_pb2 as pb

from ..test_signed_bundles import Keys, Served, keys, served, sign, signed_copy  # noqa: F401

__all__ = ["keys", "served"]


@pytest.mark.parametrize("version", ["1.1.0", "1.1.0+rebuild", "01.1.0", "1.1"])
def test_an_equal_version_with_other_content_is_refused(
    served: Served, keys: Keys, tmp_path: Path, version: str
) -> None:
    before = served.answer()
    assert before.decision == pb.DECISION_ALLOW
    other = tmp_path / f"other-{version}"
    signed_copy(other, keys, "old", version)
    # Other content under the same (or an equal) version: the editor rule is gone.
    policy = other / "rbac" / "documents.cedar"
    policy.write_text(
        policy.read_text().replace("resource.editors.contains", "resource.viewers.contains")
    )
    sign(other, keys.private("old"))
    start = served.publish(other)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = "\n".join(served.srv.lines[start:])
        if "bundle refused" in text or "serving bundle" in text:
            break
        time.sleep(0.05)
    after = served.answer()
    assert after.policy_version.digest == before.policy_version.digest, (
        f"replaced {before.policy_version.version} by {after.policy_version.version}"
        f" with other content: decision {after.decision}"
    )
