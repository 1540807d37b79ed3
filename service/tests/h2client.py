"""A minimal HTTP/2 client on a socket that leaves gRPC messages unfinished.

grpc's own client always sends whole messages; this one opens Check streams that announce a
message of `message_bytes` and send all of it but the last byte (as fast as the server's
flow control allows), so the server holds each stream open with its buffered bytes. Used by
the transport-limit tests and by `bench/stream_flood.py`.
"""

from __future__ import annotations

import re
import socket
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_HEADERS, ACK = 0x4, 0x1
FRAME = 16384  # the HTTP/2 default SETTINGS_MAX_FRAME_SIZE
FILL = b"x" * (1024 * 1024)  # message bytes (never completed, so never decoded)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (lengths < 127)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class Connection:
    """One HTTP/2 connection with streams that each send an almost complete gRPC message.

    `closed` says how the server ended each stream it ended: `RST_STREAM <code>`, or
    `trailers` (a trailers-only answer: the call was refused; `grpc-status N` if readable).
    """

    def __init__(self, port: int, streams: int, message_bytes: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.lock = threading.Lock()
        self.window = 65535  # connection-level send window
        self.initial = 65535  # per-stream window from the server's SETTINGS
        self.windows: dict[int, int] = {}
        self.left: dict[int, int] = {}  # bytes still to send per stream
        self.closed: dict[int, str] = {}  # stream -> how the server ended it
        self.goaway = False
        self.message_bytes = message_bytes
        self.frame = FRAME
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        headers = b"".join(
            literal(k, v)
            for k, v in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/pdp.v1.AuthorizationService/Check"),
                (":authority", f"127.0.0.1:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )
        for i in range(streams):
            sid = 2 * i + 1
            with self.lock:
                self.windows[sid] = self.initial
                self.left[sid] = 5 + message_bytes - 1
            self._send(frame(HEADERS, END_HEADERS, sid, headers))

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.goaway = True

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def _read(self) -> None:
        try:
            while True:
                head = self._recv(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self._recv(length)
                with self.lock:
                    self._on_frame(kind, flags, sid, payload)
        except (EOFError, OSError):
            self.goaway = True

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            for k in range(0, len(payload), 6):
                ident, val = struct.unpack(">HI", payload[k : k + 6])
                if ident == 0x5:  # MAX_FRAME_SIZE: bigger frames, fewer Python round trips
                    self.frame = val
                if ident == 0x4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                    for s in self.windows:
                        self.windows[s] += val - self.initial
                    self.initial = val
            self._send(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self._send(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if sid == 0:
                self.window += inc
            elif sid in self.windows:
                self.windows[sid] += inc
        elif kind == RST_STREAM:
            self.closed.setdefault(sid, f"RST_STREAM {int.from_bytes(payload, 'big')}")
            self.left[sid] = 0
        elif kind == HEADERS:
            # No HPACK decoder here: the status is readable only while sent as a literal.
            status = re.search(rb"grpc-status[^0-9]*([0-9]+)", payload)
            self.closed.setdefault(
                sid, f"grpc-status {status[1].decode()}" if status else "trailers"
            )
            self.left[sid] = 0
        elif kind == GOAWAY:
            self.goaway = True

    def pump(self) -> int:
        """Send what the windows allow; returns the bytes sent."""
        sent = 0
        for sid in list(self.left):
            with self.lock:
                n = min(self.left[sid], self.windows[sid], self.window, self.frame, len(FILL))
                if n <= 0:
                    continue
                self.windows[sid] -= n
                self.window -= n
                first = self.left[sid] == 5 + self.message_bytes - 1
                self.left[sid] -= n
            prefix = b"\x00" + struct.pack(">I", self.message_bytes) if first else b""
            self._send(frame(DATA, 0, sid, prefix + FILL[: n - len(prefix)]))
            sent += n
        return sent

    def pump_all(self) -> None:
        """Send until every stream waits on its last byte or on the server's window."""
        while self.pump():
            pass

    def open_streams(self) -> int:
        with self.lock:
            return sum(1 for sid in self.left if sid not in self.closed)

    def close(self) -> None:
        # shutdown first: a plain close() leaves the socket open while the reader thread
        # is blocked in recv() on it, so the server would never see the connection end.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
