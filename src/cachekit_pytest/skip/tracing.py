"""Which code each test executed: the recorder behind per-test dependencies
(`cachekit.skip.dependencies`).

Only a run that records passes records this (`cachekit_pytest.skip.run`). A global trace
function (``sys.settrace``, and ``threading.settrace`` for threads started since) adds
each frame's code object to a set on ``call`` events and returns None: no line events,
and the per-call cost is one set insertion. At the end of each *window* the set is
filtered to project files (decided once per file name) and added to every window open:

- a test: ``pytest_runtest_protocol`` (setup, call, teardown);
- a fixture's setup and its teardown (scoped fixtures run during the first test that
  needs them and are torn down during the last: later tests use their value without
  executing them, so each test also depends on what its fixtures' windows executed);
- each collector's collection (``pytest_make_collect_report``).

While collecting, and in a test window from the moment a module's code starts (it is
imported: by an ``import`` or ``importlib``), a slower trace function walks the
stack of each call of project code: code that runs under a project module's
``<module>`` frame is that module's *import-time* code, not the window's. A test depends
on the import-time code of its file's closure and of every file it executed code in,
because a module imported once serves every later test without running again. (A thread
that imports gives the windows open all it ran since, a superset.)

What cannot be recorded makes a window *incomplete*, and its tests fall back to their
test file's full key (every function body of the closure): another tracer replaced ours
(a debugger, coverage started by a test), or the window started a process (audit events
``subprocess.Popen``, ``os.system``, ``os.fork``, ``os.exec``, ``os.posix_spawn``,
``os.spawn``: the child runs code no tracer here sees). When a tracer is already set at
the start (coverage measuring the run), nothing is recorded and every test falls back.

Known gaps (documented): threads started before recording began are not traced, and
neither is code a test reaches without executing any (a module constant of a module
another test imported dynamically).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Generator
from types import CodeType, FrameType
from typing import Any

import pytest

#: Audit events that start another process (or replace this one).
SPAWN_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
    }
)

#: The recorder the audit hook reports to (audit hooks cannot be removed: one is added
#: per process, and reports to whichever recorder is running).
_ACTIVE: list[Recorder] = []
_AUDIT_HOOKED: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _ACTIVE and event in SPAWN_EVENTS:
        _ACTIVE[-1].spawned()


class Window:
    """The project code executed while one test, fixture or collector ran."""

    __slots__ = ("codes", "complete")

    def __init__(self) -> None:
        self.codes: set[CodeType] = set()
        self.complete = True


class Recorder:
    """Records code objects by window (see the module docstring).

    ``is_project(filename)`` says whether a code object's file is a project file; it is
    asked once per file name.
    """

    def __init__(self, is_project: Callable[[str], bool]) -> None:
        self._is_project = is_project
        self._project: dict[str, bool] = {}
        self._seen: set[CodeType] = set()
        add = self._seen.add
        importing = self._importing

        def trace(frame: FrameType, event: str, arg: object) -> None:
            code = frame.f_code
            if code.co_name == "<module>":
                importing(code)
            else:
                add(code)

        self._trace = trace
        self._open: list[Window] = []
        self.tests: dict[str, Window] = {}
        self.items: dict[str, pytest.Item] = {}
        self.fixtures: dict[int, tuple[object, Window]] = {}
        #: Project file name -> the code its import executed (a superset).
        self.imports: dict[str, set[CodeType]] = {}
        #: Code executed while collecting outside any collector's window.
        self.outside = Window()
        #: Project files imported before recording began: their import is unknown.
        self.preloaded: frozenset[str] = frozenset()
        #: Nothing is recorded: a tracer was set before ours.
        self.blocked = False
        self.running = False
        #: The thread that runs the tests.
        self._thread = 0
        #: The trace function set: one that attributes imports until the first test,
        #: then `_trace`.
        self._attributing = self._import_tracer()
        self._tracer: Callable[[FrameType, str, object], None] = self._attributing

    # -- starting and stopping ------------------------------------------------------------

    def start(self) -> None:
        if sys.gettrace() is not None:
            self.blocked = True
            return
        self.preloaded = frozenset(
            filename
            for module in list(sys.modules.values())
            if isinstance(filename := getattr(module, "__file__", None), str)
            and self.is_project_file(filename)
        )
        if not _AUDIT_HOOKED:
            sys.addaudithook(_audit)
            _AUDIT_HOOKED.append(True)
        _ACTIVE.append(self)
        self._thread = threading.get_ident()
        self.running = True
        threading.settrace(self._trace)
        sys.settrace(self._tracer)

    def stop(self) -> None:
        if not self.running:
            return
        self._flush()
        if sys.gettrace() is self._tracer:
            sys.settrace(None)
        threading.settrace(None)
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self.running = False

    # -- windows --------------------------------------------------------------------------

    def is_project_file(self, filename: str) -> bool:
        known = self._project.get(filename)
        if known is None:
            known = self._project[filename] = self._is_project(filename)
        return known

    def _flush(self) -> None:
        """Hand what was executed since the last flush to the open windows (or, with
        none open before the tests, to `outside`); check our tracer still runs."""
        seen = self._seen
        if not self.running:
            return
        current = sys.gettrace()
        if current is self._trace or current is self._attributing:
            self._tracer = current  # restored by code that saved it (doctest does)
        else:
            for window in self._open:
                window.complete = False
            sys.settrace(self._tracer)
        if not seen:
            return
        # Threads add to the set meanwhile: a copy and a removal are each atomic.
        snapshot = seen.copy()
        seen.difference_update(snapshot)
        project = self._project
        codes = set()
        for code in snapshot:
            filename = code.co_filename
            known = project.get(filename)
            if known is None:
                known = self.is_project_file(filename)
            if known:
                codes.add(code)
        for window in self._open or (self.outside,):
            window.codes |= codes

    def _import_tracer(self) -> Callable[[FrameType, str, object], None]:
        """The trace function while collecting: project code is attributed to the
        innermost project module being imported (a ``<module>`` frame on the stack), or
        else to the open windows."""
        project = self._project
        is_project_file = self.is_project_file
        imports = self.imports
        add = self._seen.add

        def trace(frame: FrameType, event: str, arg: object) -> None:
            code = frame.f_code
            known = project.get(code.co_filename)
            if known is None:
                known = is_project_file(code.co_filename)
            if not known:
                return
            caller: FrameType | None = frame
            while caller is not None:
                outer = caller.f_code
                if outer.co_name == "<module>":
                    module = project.get(outer.co_filename)
                    if module is None:
                        module = is_project_file(outer.co_filename)
                    if module:
                        imports.setdefault(outer.co_filename, set()).add(code)
                        return
                caller = caller.f_back
            add(code)

        return trace

    def open(self) -> Window:
        self._flush()
        window = Window()
        self._open.append(window)
        return window

    def close(self, window: Window) -> None:
        self._flush()
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index] is window:
                del self._open[index]
                break
        for code in window.codes:
            if code.co_name == "<module>":
                self.imports.setdefault(code.co_filename, set()).update(window.codes)

    def _importing(self, code: CodeType) -> None:
        """A module's code starts (it is being imported): from now on, and for the rest
        of the window, attribute what runs to the modules being imported. Tests that
        import nothing keep the cheaper tracer. (In another thread: the code goes to the
        windows, which then give the module all they ran, a superset.)"""
        if not self.is_project_file(code.co_filename):
            return  # a module of no project file (the examples a doctest runs, say)
        if not (
            self.running and threading.get_ident() == self._thread and sys.gettrace() is self._trace
        ):
            self._seen.add(code)
            return
        self.imports.setdefault(code.co_filename, set()).add(code)
        self._tracer = self._attributing
        sys.settrace(self._attributing)

    def spawned(self) -> None:
        for window in self._open:
            window.complete = False

    # -- hooks ----------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        if not self.running:
            return (yield)
        window = self.open()
        try:
            return (yield)
        finally:
            self.close(window)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, Any]:
        if not self.running:
            return (yield)
        if self._tracer is not self._trace:  # no more attributing, until a test imports
            self._flush()
            self._tracer = self._trace
            sys.settrace(self._trace)
        window = self.open()
        try:
            return (yield)
        finally:
            self.close(window)
            known = self.tests.get(item.nodeid)
            if known is not None:  # run again (a rerun plugin): both count
                window.codes |= known.codes
                window.complete = window.complete and known.complete
            self.tests[item.nodeid] = window
            self.items[item.nodeid] = item

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        if not self.running or fixturedef.scope == "function":
            return (yield)  # a function-scoped fixture runs in its test's window
        known = self.fixtures.get(id(fixturedef))
        if known is None:
            known = self.fixtures[id(fixturedef)] = (fixturedef, Window())
        fixture_window = known[1]
        teardown: list[Window] = []

        def teardown_done() -> None:  # the last finalizer to run: after its teardown
            if teardown:
                self._merge(fixture_window, teardown.pop())

        fixturedef.addfinalizer(teardown_done)
        window = self.open()
        try:
            return (yield)
        finally:
            self._merge(fixture_window, window)
            # Added after the fixture's own teardown: runs first, when teardown starts.
            fixturedef.addfinalizer(lambda: teardown.append(self.open()))

    def _merge(self, into: Window, window: Window) -> None:
        self.close(window)
        into.codes |= window.codes
        into.complete = into.complete and window.complete

    def fixture_windows(self, item: pytest.Item) -> list[Window]:
        """The windows of the scoped fixtures ``item`` uses (every definition of each of
        its fixture names: an override may call the fixture it overrides)."""
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            return []
        found = []
        for name in getattr(item, "fixturenames", ()):
            for fixturedef in info.name2fixturedefs.get(name, ()):
                known = self.fixtures.get(id(fixturedef))
                if known is not None and known[0] is fixturedef:
                    found.append(known[1])
        return found


def project_file_test(root: str) -> Callable[[str], bool]:
    """Whether a code object's file name is a project file: a Python source under the
    root (real paths), outside the interpreter's own prefixes and any site-packages (a
    virtualenv inside the project is not project code; `cachekit.skip.closure`'s rule)."""
    real_root = os.path.realpath(root)
    inside = tuple(
        os.path.realpath(prefix) + os.sep
        for prefix in {sys.prefix, sys.exec_prefix, sys.base_prefix}
        if prefix and os.path.realpath(prefix).startswith(real_root + os.sep)
    )

    def is_project(filename: str) -> bool:
        if not filename.endswith(".py") or filename.startswith("<"):
            return False
        real = os.path.realpath(filename)
        if not real.startswith(real_root + os.sep) or real.startswith(inside):
            return False
        parts = real[len(real_root) :].split(os.sep)
        return "site-packages" not in parts and "dist-packages" not in parts

    return is_project
