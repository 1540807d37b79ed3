"""Attacks on traces: caller values in span attributes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc

from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc
from pdp.app import App
from pdp.config import Settings

from .test_decision_log import BUNDLE, check
from .test_tracing import recorded, traceparent

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"


def test_a_callers_action_id_reaches_no_span_unmasked(tmp_path: Path) -> None:
    # With request validation off (a manifest setting), the action is any caller string;
    # the decision log masks it (`Masker.text`), the decision span copies it as
    # `pdp.action` (and `pdp.actions` for a batch): a token sent as an action id goes to
    # the trace backend in clear.
    root = tmp_path / "logs"
    root.mkdir()
    for name, text in BUNDLE.items():
        (root / name).write_text(text)
    tracing, exporter = recorded()
    settings = Settings(listen="127.0.0.1:0", bundles={"logs": root}, watch=False,
                        decision_log="off", shutdown_grace_seconds=5)  # fmt: skip
    app = App(settings, tracing=lambda: tracing)
    app.load()
    loop = asyncio.new_event_loop()
    port: list[int] = []
    ready = threading.Event()

    def serve() -> None:
        try:
            loop.run_until_complete(app.run(lambda p: (port.append(p), ready.set())))
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30) and port
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            stub.Check(check(action=("Action", JWT)), metadata=traceparent(), timeout=10)
    finally:
        loop.call_soon_threadsafe(app.request_stop)
        thread.join(30)
    values = [str(v) for s in exporter.get_finished_spans() for v in (s.attributes or {}).values()]
    assert values, "no span recorded"
    assert not [v for v in values if JWT in v], [v for v in values if JWT in v]
