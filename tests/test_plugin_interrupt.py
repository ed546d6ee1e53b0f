"""Ctrl-C while the run waits for its end-of-run write: pytest's interrupted summary,
exit code 2, no traceback, at once; and nothing the store held is lost.

The store is moto's S3 server behind a loopback HTTP proxy that holds every PUT until
the test ends, so the run is caught mid-write; the signal goes to the whole process
group, as a terminal's Ctrl-C does (the sync agent gets it too).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from plugin_support import shared
from servers import LOOPBACK, new_s3_bucket

TESTS = """
def test_pass():
    pass

def test_fail():
    assert 0
"""

#: Longest a run may take to end after Ctrl-C (it used to take 5 s, then die by SIGINT).
PROMPT = 3.0


class HoldingProxy:
    """Forwards HTTP requests to ``target``; holds each PUT until `release` (and says
    when the first one arrived)."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target).netloc
        self.put_arrived = threading.Event()
        self.released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "PUT":
                    proxy.put_arrived.set()
                    proxy.released.wait()
                    self.close_connection = True
                    return
                connection = http.client.HTTPConnection(proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def holding_proxy(s3_endpoint: str) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(s3_endpoint)
    proxy.thread.start()
    yield proxy
    proxy.release()
    proxy.server.shutdown()
    proxy.server.server_close()


def pytest_command(url: str, *args: str) -> list[str]:
    # hypothesis imports itself in its terminal summary, slowly: not what this is about
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:hypothesispytest",
        f"--cache-url={url}",
        *args,
    ]


def test_ctrl_c_during_the_end_of_run_write(
    pytester: pytest.Pytester, s3_endpoint: str, holding_proxy: HoldingProxy
) -> None:
    pytester.makepyfile(TESTS)
    direct = new_s3_bucket(s3_endpoint)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    # A first run stores its parts (straight to moto).
    first = subprocess.run(
        pytest_command(direct), cwd=pytester.path, env=environment, capture_output=True, check=False
    )
    assert first.returncode == pytest.ExitCode.TESTS_FAILED, first.stdout.decode()
    stored = sorted(shared(direct).store.list())
    assert stored
    # The second run's write is held by the proxy; Ctrl-C while it waits.
    bucket = urlsplit(direct).netloc
    held = f"s3://{bucket}/cache?{urlencode({'endpoint_url': holding_proxy.endpoint})}"
    # Ctrl-C as in a terminal, whatever this test process was left with: a child keeps
    # an ignored SIGINT across exec, and Python then never raises KeyboardInterrupt (seen
    # in CI's full runs only). A handler of ours is reset to the default by exec.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            pytest_command(held, "--cache-timeout=60"),
            cwd=pytester.path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the signal reaches it and the agent
        )
    finally:
        signal.signal(signal.SIGINT, inherited)
    lines: list[str] = []
    in_summary = threading.Event()

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.decode(errors="replace"))
            if " FAILURES " in lines[-1]:  # the terminal summary: next, the wait
                in_summary.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert holding_proxy.put_arrived.wait(60), "the run never began its write"
        assert in_summary.wait(60), "".join(lines)
        time.sleep(1.0)  # the run waits for the held write now
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        elapsed = time.monotonic() - signalled
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(lines)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, (inherited, text)
    assert "Traceback" not in text, text
    assert "KeyboardInterrupt" in text  # pytest's interrupted summary...
    assert "1 failed, 1 passed" in text  # ...with its results line
    assert elapsed < PROMPT, (elapsed, text)
    # Nothing stored is lost, and the working copy holds the run's failure.
    assert set(stored) <= set(shared(direct).store.list())
    lastfailed = Path(pytester.path, ".pytest_cache", "v", "cache", "lastfailed").read_text()
    assert "test_fail" in lastfailed
