"""The sync agent: a helper process that talks to a remote store for a pytest run.

A remote store's client libraries are heavy for a test process: importing botocore
takes most of a second, and its objects, threads and dozens of loggers then slow down
pytest's garbage collection and log capture for the whole run. The agent keeps all of
that in another process, where it also overlaps the start-up read with collection and
the test run (the values are needed at the start only for ``--lf``, ``--ff`` and
``--nf``). Nothing else changes: the agent runs the same `Remote` as the in-process
path, and the pytest side spends the same `Budget` on waiting for it.

The two processes exchange one JSON document per line (records below, through cattrs):
the pytest side sends `Start`, then any `Write`, then `Close` (or just closes the pipe);
the agent answers each with a `Reply`, and `Start` with two: once the store is open,
then with the start-up read.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs
import cattrs

from cachekit.ci.namespace import Namespace
from cachekit.errors import (
    CacheKitWarning,
    CorruptValueWarning,
    InvalidURL,
    StoreUnavailableWarning,
)
from cachekit.session import UNLIMITED, Session
from cachekit.stores.extras import needs_library
from cachekit.values.codec import JSON
from cachekit.values.digests import DigestSet
from cachekit_pytest.sync.keys import Found, SharedKey, shared_keys
from cachekit_pytest.sync.records import Write
from cachekit_pytest.sync.remote import InvalidBackend, Remote, SyncFailed

T = TypeVar("T")

#: Longest wait for the agent to start and import the backend's libraries. Not charged to
#: the budget (it is not the store's time), but bounded: a broken install must not hang.
OPEN_TIMEOUT = 60.0
#: Longest wait for the agent to exit once closed.
EXIT_TIMEOUT = 5.0


@attrs.frozen
class Start:
    url: str
    namespace: Namespace
    keys: tuple[SharedKey, ...]
    #: False under ``--cache-clear``: open the store for the end of the run, read nothing.
    read: bool
    #: Keys whose parts are counted, their values not read (`Remote.count_only`).
    count_only: tuple[str, ...] = ()


@attrs.frozen
class Request:
    """Exactly one field is set."""

    start: Start | None = None
    write: Write | None = None
    close: bool = False


@attrs.frozen
class RaisedWarning:
    #: A `cachekit.errors` warning class name; anything else is a `CacheKitWarning`.
    category: str
    message: str


@attrs.frozen
class Reply:
    ok: bool
    error: str = ""
    #: The URL cannot be opened: a configuration error, not a fault of the store.
    invalid: bool = False
    found: dict[str, Found] | None = None
    warnings: tuple[RaisedWarning, ...] = ()


_converter = cattrs.Converter(forbid_extra_keys=True)
# Values typed Any are JSON already: pass them through rather than inspect every item
# (a run's part holds an entry per test).
_converter.register_unstructure_hook_func(lambda type_: type_ is Any, lambda value: value)


def encode(record: Request | Reply) -> bytes:
    document = _converter.unstructure(record)
    text = json.dumps(document, separators=(",", ":"), allow_nan=False, default=_as_json)
    return text.encode() + b"\n"


def _as_json(value: object) -> JSON:
    """Values that are not JSON as they stand: the test ids the store knows."""
    if isinstance(value, DigestSet):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON")


def decode(line: bytes, kind: type[T]) -> T:
    return _converter.structure(json.loads(line), kind)


# -- the agent process ----------------------------------------------------------------


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer requests until `Close` or the end of the pipe."""
    remote: Remote | None = None

    def answer(reply: Reply) -> None:
        replies.write(encode(reply))
        replies.flush()

    for line in requests:
        request = decode(line, Request)
        if request.start is not None:
            start = request.start
            # No time limit here: the pytest side holds the run's budget, and kills the
            # agent when it runs out.
            session = Session(start.url, namespace=start.namespace, timeout=UNLIMITED)
            remote = Remote(session, shared_keys(start.keys), count_only=start.count_only)
            opening = _attempt(remote.open, session.redact)
            answer(opening)
            if opening.ok and start.read:
                answer(_attempt(remote.read, session.redact))
        elif request.write is not None:
            assert remote is not None, "Write before Start"
            write = functools.partial(remote.write, request.write)
            answer(_attempt(write, remote.session.redact))
        if request.close:
            break
    if remote is not None:
        _attempt(remote.close, remote.session.redact)


def _attempt(call: Callable[[], object], redact: Callable[[str], str]) -> Reply:
    """``call()`` as a `Reply`: its result if it read values, every cachekit warning it
    raised, and any exception as a message (every text ``redact``-ed: the store's
    credentials never leave the agent)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CacheKitWarning)
        try:
            result = call()
        except InvalidBackend as error:
            return Reply(ok=False, error=redact(str(error)), invalid=True)
        except Exception as error:  # reported to the pytest side, which warns once
            return Reply(ok=False, error=redact(f"{type(error).__name__}: {error}"))
    raised = tuple(
        RaisedWarning(type(w.message).__name__, redact(str(w.message)))
        for w in caught
        if isinstance(w.message, CacheKitWarning)
    )
    found = result if isinstance(result, dict) else None
    return Reply(ok=True, found=found, warnings=raised)


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.flush()
    # Nothing is left to do: skip the interpreter's teardown of botocore and friends,
    # which the pytest side would otherwise wait for.
    os._exit(0)


# -- the pytest side ------------------------------------------------------------------


class AgentSync:
    """`cachekit_pytest.sync.remote.Sync` through an agent process.

    Replies are read by a thread into a queue; each wait takes its deadline from the
    budget (`Budget.run`). An agent that runs out of time or dies is killed, and the run
    goes on as the in-process path would after the same fault.
    """

    def __init__(self, session: Session, keys: tuple[SharedKey, ...]) -> None:
        self.session = session
        self.budget = session.budget
        self.keys = keys
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Reply | None] = queue.Queue()
        self._opened: Reply | None = None
        self._read_requested = False
        self._writing = False
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        #: Set when the agent's output ends, which it does as it exits.
        self._output_ended = threading.Event()
        self.checked_here = False

    def start(self, *, read: bool, count_only: Collection[str] = ()) -> None:
        try:  # a missing library is found here at once, not once the agent has started
            self.checked_here = needs_library(self.session.url)
        except InvalidURL as error:
            raise InvalidBackend(self.session.redact(str(error))) from None
        package_root = str(Path(__file__).resolve().parents[2])
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {package_root!r}); "
                "from cachekit_pytest.sync.agent import main; main()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        threading.Thread(
            target=self._read_replies, args=(self._process.stdout,), daemon=True
        ).start()
        threading.Thread(
            target=self._read_errors, args=(self._process.stderr,), daemon=True
        ).start()
        self._read_requested = read
        start = Start(
            self.session.url, self.session.namespace, self.keys, read, tuple(sorted(count_only))
        )
        self._send(Request(start=start))

    def _read_replies(self, stream: IO[bytes]) -> None:
        # Each reader closes its pipe when done: left to the garbage collector, an open
        # pipe is a ResourceWarning, which ``-W error`` turns into an error of whatever
        # test happens to be running then.
        with stream:
            try:
                for line in stream:
                    self._replies.put(decode(line, Reply))
            except Exception:  # garbage from the agent: treated as the agent dying
                pass
        self._replies.put(None)
        self._output_ended.set()

    def _read_errors(self, stream: IO[bytes]) -> None:
        """Keep the end of what the agent printed: it explains an unexpected exit."""
        with stream:
            for line in stream:
                self._errors.append(line.decode(errors="replace").rstrip())

    def _died(self, what: str) -> SyncFailed:
        self.budget.remaining = 0.0
        last = next((line for line in reversed(self._errors) if line.strip()), "")
        return SyncFailed(
            f"{what}: the sync agent exited unexpectedly"
            + (f" ({self.session.redact(last)})" if last else "")
        )

    def _send(self, request: Request) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(encode(request))
            self._process.stdin.flush()
        except OSError:
            pass  # the agent died: the reply queue says so

    def opened(self, *, wait: bool = True) -> bool:
        if self._opened is None:
            self._opened = self._next(OPEN_TIMEOUT if wait else 0.0, "starting the sync agent")
            if self._opened is None:
                return False
        if self._opened.invalid:
            raise InvalidBackend(self.session.redact(self._opened.error))
        if not self._opened.ok:
            self.budget.remaining = 0.0
            raise SyncFailed(f"opening {self.session.display}: {self._opened.error}")
        return True

    def result(self) -> dict[str, Found]:
        assert self._read_requested, "the start-up read was not requested"
        self.opened()
        reply = self._wait(f"reading {self.session.display}")
        return reply.found or {}

    def write(self, write: Write) -> None:
        """Send the run's write to the agent; `written` waits until it is stored."""
        self.opened()
        self._send(Request(write=write))
        self._writing = True

    def written(self) -> None:
        if self._writing:
            self._writing = False
            self._wait(f"writing to {self.session.display}")

    def close(self) -> None:
        process = self._process
        if process is None:
            return
        self._send(Request(close=True))
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # the agent is gone already
                process.stdin.close()
        # Wait for the end of its output, then for the process: `Popen.wait` with a timeout
        # polls, with sleeps that double up to 50 ms, and would keep the run 15 to 30 ms
        # longer than the agent's exit.
        timeout = min(EXIT_TIMEOUT, max(self.budget.remaining, 0.1))
        try:
            if not self._output_ended.wait(timeout):
                raise subprocess.TimeoutExpired(process.args, timeout)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait(self, what: str) -> Reply:
        """The next reply within the budget; `SyncFailed` if it failed or never came."""
        try:
            reply = self.budget.run(self._replies.get, what)
        except SyncFailed:
            self._kill()  # out of time: a hung agent must not outlive the run
            raise
        if reply is None:
            self._kill()
            raise self._died(what)
        self._note_warnings(reply)
        if not reply.ok:
            self.budget.remaining = 0.0
            raise SyncFailed(f"{what}: {reply.error}")
        return reply

    def _next(self, timeout: float, what: str) -> Reply | None:
        """The next reply, not charged to the budget (only the start-up uses this);
        with a ``timeout`` of 0, None if it has not come yet."""
        try:
            reply = self._replies.get(timeout=timeout) if timeout else self._replies.get_nowait()
        except queue.Empty:
            if not timeout:
                return None
            self._kill()
            self.budget.remaining = 0.0
            raise SyncFailed(f"{what}: no answer within {timeout:g} s") from None
        if reply is None:
            raise self._died(what)
        self._note_warnings(reply)
        return reply

    def _note_warnings(self, reply: Reply) -> None:
        for raised in reply.warnings:
            category = _WARNINGS.get(raised.category, CacheKitWarning)
            self.budget.warnings.append(category(raised.message))

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()


_WARNINGS: dict[str, type[CacheKitWarning]] = {
    category.__name__: category
    for category in (CacheKitWarning, CorruptValueWarning, StoreUnavailableWarning)
}


if __name__ == "__main__":
    main()
