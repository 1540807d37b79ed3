"""CheckStream over gRPC: many checks over one stream, answered in order exactly as Check
answers each; an undecidable request gets its error in-band and the stream goes on; open
streams are capped so that unary calls always keep a worker thread."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc

from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import authorization_pb2_grpc as pb_grpc

from ..support import DOCS_BUNDLE, running_server
from .test_service import docs, uid

STREAM = "/pdp.v1.AuthorizationService/CheckStream"


REQUESTS = [
    docs(),  # allow
    docs(principal=uid("User", "mallory")),  # deny by a forbid
    docs(tenant="nobody"),  # unknown tenant: NOT_FOUND
    docs(context_json='{"a": 1, "a": 2}'),  # INVALID_ARGUMENT naming the key
    docs(principal=uid("", "x")),  # INVALID_ARGUMENT naming principal.type
    docs(principal=uid("User", "bob"), action=uid("Action", "edit")),  # default deny
    docs(),  # and the stream still answers after the errors
]


def _comparable(r: pb.CheckResponse) -> tuple[object, ...]:
    """A response without its decision id (unique per answer); Cedar reports the
    determining policies as a set, in no fixed order."""
    return (r.decision, sorted(r.determining_policies), list(r.errors), r.policy_version)


def test_a_stream_answers_each_request_as_check_does_in_order() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]) as srv:
        with srv.channel() as ch:
            stub = pb_grpc.AuthorizationServiceStub(ch)
            answers = list(stub.CheckStream(iter(REQUESTS * 3), timeout=30))
            assert len(answers) == len(REQUESTS) * 3
            errors = 0
            for req, got in zip(REQUESTS * 3, answers, strict=True):
                try:
                    want = stub.Check(req, timeout=10)
                except grpc.RpcError as exc:
                    errors += 1
                    assert got.WhichOneof("outcome") == "error"
                    assert got.error.code == exc.code().value[0]
                    assert got.error.message == exc.details()
                else:
                    assert got.WhichOneof("outcome") == "result"
                    assert _comparable(got.result) == _comparable(want)
            assert errors == 3 * 3  # the three bad requests, each time round
            ids = [a.result.decision_id for a in answers if a.WhichOneof("outcome") == "result"]
            assert len(set(ids)) == len(ids) == 4 * 3
            messages = [a.error.message for a in answers[: len(REQUESTS)] if a.error.message]
            assert messages[0].startswith("tenant: ")
            assert messages[1].startswith("context_json.a: duplicate key")
            assert messages[2].startswith("principal.type: ")


def test_bytes_that_are_not_a_request_are_answered_in_band() -> None:
    with running_server(["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch"]) as srv:
        with srv.channel() as ch:
            raw = ch.stream_stream(STREAM)  # bytes in, bytes out
            good = docs().SerializeToString()
            out = [
                pb.CheckStreamResponse.FromString(b)
                for b in raw(iter([good, b"\xff\xff\xff", good]), timeout=30)
            ]
            assert [o.WhichOneof("outcome") for o in out] == ["result", "error", "result"]
            assert out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert out[1].error.message.startswith("request: not a valid pdp.v1.CheckRequest")
            assert out[2].result.decision == pb.DECISION_ALLOW


def test_streams_past_the_cap_are_refused_and_unary_calls_keep_a_thread() -> None:
    args = ["--bundle", f"docs={DOCS_BUNDLE}", "--no-watch", "--threads", "2"]
    with running_server([*args, "--max-check-streams", "1"]) as srv, srv.channel() as ch:
        stub = pb_grpc.AuthorizationServiceStub(ch)
        # The first stream stays open, holding its thread, until None is queued.
        q: queue.Queue[pb.CheckRequest | None] = queue.Queue()

        def requests() -> Iterator[pb.CheckRequest]:
            while (r := q.get()) is not None:
                yield r

        first = stub.CheckStream(requests(), timeout=30)
        q.put(docs())
        assert next(first).result.decision == pb.DECISION_ALLOW  # it is open and answering
        try:
            list(stub.CheckStream(iter([docs()]), timeout=10))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_check_streams" in (exc.details() or "")
        else:
            raise AssertionError("a second stream was accepted past max_check_streams=1")
        # One thread of two is held by the open stream: unary calls are still answered.
        for _ in range(5):
            assert stub.Check(docs(), timeout=10).decision == pb.DECISION_ALLOW
        q.put(None)  # close the first stream: its slot is free again
        assert list(first) == []
        [again] = list(stub.CheckStream(iter([docs()]), timeout=10))
        assert again.result.decision == pb.DECISION_ALLOW
