"""The supply chain, as far as it can be checked without building an image: the locks pin
every dependency with hashes and agree with pyproject.toml and each other, the Dockerfile
installs only from them onto a base pinned by digest, runs as a non-root user and checks
its health with `pdp health`, which answers from the real server's health service."""

from __future__ import annotations

import re
import socket
import subprocess
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import REPO, ServerProcess, pdp_command

_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)")


def pins(path: str) -> dict[str, tuple[str, int]]:
    """Package -> (version, hashes) of a lock written by `uv pip compile --generate-hashes`."""
    out: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (REPO / path).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            name = canonicalize_name(m[1])
            out[name] = (m[2], 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, n = out[name]
            out[name] = (version, n + 1)
    return out


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def test_every_pin_has_a_hash_and_every_dependency_is_locked() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    build = pins("requirements-build.lock")
    for lock in (runtime, dev, build):
        assert lock and all(n >= 1 for _, n in lock.values())
    assert declared() <= runtime.keys()
    assert declared("dev") <= dev.keys()
    assert {"pip", "setuptools"} <= dev.keys()  # `make` installs its installer hashed too
    assert "setuptools" in build
    # The image ships what the tests ran on: the same version of every shared package.
    for lock in (runtime, build):
        assert {k: v[0] for k, v in lock.items()} == {k: dev[k][0] for k in lock}
    dev_tools = declared("dev") - declared()
    assert dev_tools and not dev_tools & runtime.keys()  # no dev tool in the image


def test_the_makefile_installs_from_the_lock_only() -> None:
    make = (REPO / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in make
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in make
    assert "--upgrade pip" not in make  # an unhashed fetch of the installer


def test_the_dockerfile_is_pinned_hashed_and_unprivileged() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:[\w.-]+@sha256:[0-9a-f]{64}", base[1]), base
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE}" for f in froms)  # every stage on the pinned base
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    for args in installs:
        assert "--require-hashes" in args or "--no-deps /wheels/" in args, args
    assert re.search(r"^USER 10001:10001$", text, re.M)
    last = text[text.rindex("FROM ") :]
    assert "USER root" not in last and "USER 0" not in last
    assert re.search(r'^VOLUME \["/data", "/tmp"\]$', text, re.M)
    assert re.search(r'CMD \["pdp", "health"', text)
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # only what is listed after it reaches the build


def test_pdp_health_answers_from_the_servers_health_service(server: ServerProcess) -> None:
    ok = subprocess.run(
        [*pdp_command(), "health", "--server", server.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING")
    unknown = subprocess.run(
        [*pdp_command(), "health", "--server", server.address, "--service", "no-such"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1
    assert "NOT_FOUND" in unknown.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = subprocess.run(
        [*pdp_command(), "health", "--server", f"127.0.0.1:{closed}", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr
