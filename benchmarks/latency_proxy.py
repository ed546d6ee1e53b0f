"""A loopback TCP proxy that delays every HTTP request by a fixed time, and counts them.

Why: a CI runner talks to a cloud bucket over tens of milliseconds of network, and on
remote stores the number of sequential round trips, not bytes or CPU, decides how long a
read takes. A local S3 server answers in about a millisecond, which would hide exactly
the cost the design is about. This proxy sits between the client and the server and
holds each client-to-server request for ``delay`` seconds, the way a far-away bucket
does, and counts the requests so a benchmark can report how many it made.

How, for HTTP/1.1 with keep-alive: the client-to-server stream of each connection is
parsed into requests (head up to the blank line, then a ``Content-Length`` or chunked
body), so a connection carrying many requests delays *each* of them by ``delay`` from
the moment its head arrived, not just the first. Bodies follow their head immediately
(so ``Expect: 100-continue`` cannot stall), order within a connection is kept, and
responses are passed straight back. Connections are accepted at once: only requests pay.

Loopback only: the proxy listens on 127.0.0.1 and forwards to a loopback target.

Use it in-process (`LatencyProxy`, its own event loop on its own thread), or, to keep
its CPU off the measured process, as its own process (`ProxyProcess`, which runs this
file): ``python benchmarks/latency_proxy.py --target 127.0.0.1:5000 --delay-ms 50``
prints ``LISTENING <port>``, then answers ``stats`` and ``reset`` lines on stdin with one
JSON line each; end of input stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

LOOPBACK = "127.0.0.1"
_READ_SIZE = 256 * 1024
_MAX_HEAD = 1024 * 1024
#: Pieces of the client-to-server stream with their release times; None ends the stream.
_Queue = asyncio.Queue[tuple[float, bytes] | None]


class ProtocolError(Exception):
    """The client sent something that is not HTTP/1.x; the connection is dropped."""


class RequestSplitter:
    """Cuts an HTTP/1.1 client-to-server byte stream into requests.

    `feed` returns pieces in stream order: ``(head, None)`` when a request head is
    complete, ``(None, bytes)`` for body bytes that belong to the request before them.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._state = "head"
        self._remaining = 0

    def feed(self, data: bytes) -> list[tuple[bytes | None, bytes | None]]:
        pieces: list[tuple[bytes | None, bytes | None]] = []
        self._buffer += data
        while self._buffer:
            if self._state == "head":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > _MAX_HEAD:
                        raise ProtocolError("request head too long")
                    break
                head, self._buffer = self._buffer[: end + 4], self._buffer[end + 4 :]
                pieces.append((head, None))
                self._start_body(head)
            elif self._state == "body":
                chunk = self._take(self._remaining)
                self._remaining -= len(chunk)
                pieces.append((None, chunk))
                if self._remaining == 0:
                    self._state = "head"
            elif self._state == "chunk-size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                line, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
                pieces.append((None, line))
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size:
                    self._state, self._remaining = "chunk-data", size + 2  # data and CRLF
                else:
                    self._state = "trailer"
            elif self._state == "chunk-data":
                chunk = self._take(self._remaining)
                self._remaining -= len(chunk)
                pieces.append((None, chunk))
                if self._remaining == 0:
                    self._state = "chunk-size"
            else:  # trailer: header lines until an empty one
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                line, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
                pieces.append((None, line))
                if line == b"\r\n":
                    self._state = "head"
        return pieces

    def _take(self, size: int) -> bytes:
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def _start_body(self, head: bytes) -> None:
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._state = "chunk-size"
        else:
            self._remaining = int(headers.get(b"content-length", b"0") or b"0")
            self._state = "body" if self._remaining else "head"


def classify(head: bytes) -> str:
    """A request's kind for the counts: its method, or LIST for an S3 bucket listing."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = request_line.partition(" ")
    path, _, query = rest.rpartition(" ")[0].partition("?")
    if method == "GET" and (
        any(name in query for name in ("list-type=", "prefix=", "delimiter="))
        or path.strip("/").count("/") == 0  # path-style GET /bucket: ListObjects (v1)
    ):
        return "LIST"
    if method == "POST" and "delete" in query:
        return "DELETE_MANY"
    return method


class LatencyProxy:
    """The proxy, on its own event loop in a daemon thread.

    Counts are kept per kind of request (`classify`) and read with `stats`.
    """

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.050) -> None:
        if target_host not in (LOOPBACK, "localhost"):
            raise ValueError("the latency proxy forwards to loopback only")
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._connections = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="latency-proxy", daemon=True
        )
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        """Start listening on a free loopback port and return it."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self.port

    def stats(self) -> dict[str, Any]:
        """Requests seen since the last `reset`, in total and per kind, and connections."""
        with self._lock:
            return {
                "requests": sum(self._counts.values()),
                "by_kind": dict(sorted(self._counts.items())),
                "connections": self._connections,
            }

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._connections = 0

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Handlers cancel their own pipes as they unwind: repeat until none are left.
            while tasks := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        # The event loop keeps only weak references to tasks: hold this one until it ends.
        this = asyncio.current_task()
        assert this is not None
        self._handlers.add(this)
        this.add_done_callback(self._handlers.discard)
        with self._lock:
            self._connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        queue: _Queue = asyncio.Queue()
        release = asyncio.create_task(self._release(queue, server_writer))
        pipe = asyncio.create_task(self._pipe(server_reader, client_writer))
        tasks = [asyncio.create_task(self._split(client_reader, queue)), release, pipe]
        try:
            # Done when the server has finished answering: after the client hung up (its
            # end of stream is passed on), or when the server closes the connection.
            # Writing to the server failing ends it too.
            await asyncio.wait([release, pipe], return_when=asyncio.FIRST_COMPLETED)
            if not pipe.done() and release.exception() is None:
                await pipe
        except asyncio.CancelledError:
            pass  # the proxy is stopping; a connection handler has no one to tell
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _split(self, reader: asyncio.StreamReader, queue: _Queue) -> None:
        """Client to queue: each request head is released ``delay`` after it arrived."""
        loop = asyncio.get_running_loop()
        splitter = RequestSplitter()
        release = 0.0
        try:
            while data := await reader.read(_READ_SIZE):
                now = loop.time()
                for head, body in splitter.feed(data):
                    if head is not None:
                        with self._lock:
                            self._counts[classify(head)] += 1
                        release = now + self.delay
                        queue.put_nowait((release, head))
                    elif body:
                        queue.put_nowait((release, body))
        except (ConnectionError, ProtocolError, ValueError):
            pass
        finally:
            queue.put_nowait(None)

    @staticmethod
    async def _release(queue: _Queue, writer: asyncio.StreamWriter) -> None:
        """Queue to server, in order, each piece no earlier than its release time."""
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            release, data = item
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server to client, untouched and undelayed."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_READ_SIZE):
                writer.write(data)
                await writer.drain()


class ProxyProcess:
    """`LatencyProxy` in a child process, driven over its stdin and stdout.

    A separate process keeps the proxy's own work off the measured process's CPU and GIL.
    """

    def __init__(self, target_port: int, *, delay: float = 0.050, log: Path | None = None) -> None:
        """Start the proxy; its stderr goes to ``log`` (default: inherited)."""
        self._log = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--target", f"{LOOPBACK}:{target_port}", "--delay-ms", str(delay * 1000)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        first = self._stdout.readline().split()
        if len(first) != 2 or first[0] != "LISTENING":
            self.stop()
            raise RuntimeError(f"latency proxy did not start: {first!r}")
        self.port = int(first[1])

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def _stdin(self) -> IO[str]:
        assert self._process.stdin is not None
        return self._process.stdin

    @property
    def _stdout(self) -> IO[str]:
        assert self._process.stdout is not None
        return self._process.stdout

    def _ask(self, command: str) -> dict[str, Any]:
        self._stdin.write(command + "\n")
        self._stdin.flush()
        answer: dict[str, Any] = json.loads(self._stdout.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._log is not None:
            self._log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = LatencyProxy(host, int(port), delay=args.delay_ms / 1000)
    print("LISTENING", proxy.start(), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(proxy.stats()), flush=True)
            elif command == "reset":
                proxy.reset()
                print(json.dumps({"ok": True}), flush=True)
            elif command == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
