"""Which code each test executed: the recorder behind per-test dependencies
(`cachekit.skip.dependencies`).

Only a run that records passes records this (`cachekit_pytest.skip.run`). On Python
3.12+ ``sys.monitoring`` sees code start (``PY_START``): other files' code is disabled at
its first call for good, project code at its first call in a window (``DISABLE``) and
enabled again, code object by code object, when the next window opens (`Monitoring`), so
other code costs one callback a run and project code one a window, not one a call.
Before 3.12 the C profiler (``cProfile``, `cachekit_pytest.skip.profiling`)
sees each call of the thread that runs the tests, and one of its own each thread started
since (``threading.setprofile``). Either way code objects go to a set (by identity:
`Codes`). At the end of each *window* the set is filtered to project files
(decided once per file name) and added to every window open:

- a test: its setup, call and teardown phases (not the reporting between them, a good
  part of pytest's own calls per test);
- a fixture's setup and its teardown (scoped fixtures run during the first test that
  needs them and are torn down during the last: later tests use their value without
  executing them, so each test also depends on what its fixtures' windows executed);
- each collector's collection (``pytest_make_collect_report``): what it executed besides
  imports (``pytest_generate_tests``, parametrization) counts for every test collected
  under it (`collector_windows`).

In a collector's or a test's window, from the moment a module's code starts (it is
imported: by an ``import`` or ``importlib``), code that runs under a project module's
``<module>`` code is that module's *import-time* code, not the window's: with
``sys.monitoring`` a slower callback walks the stack of each call of project code; with
the C profiler, it is what the call graph reaches from that code (a superset, see
`cachekit_pytest.skip.profiling`; the switch is made on the ``exec`` audit event of the
module's code). A test depends on the import-time code of its file's closure and of
every file it executed code in, because a module imported once serves every later test
without running again. (In another thread, a module's code goes to the windows open,
which then give the module all they ran, a superset.) Nothing is recorded while pytest
asks whether to collect a path (``pytest_ignore_collect``): cachekit's own answer keys
the test file there, which would cost most of a recording run under a tracer; a project
module first imported meanwhile counts as imported before recording began.

What cannot be recorded makes a window *incomplete*, and its tests fall back to their
test file's full key (every function body of the closure): another profiler replaced ours
(before 3.12: a test that profiles itself), or another tool took one of our
``sys.monitoring`` tool ids, or the window started a process (audit events ``subprocess.Popen``,
``os.system``, ``os.fork``, ``os.exec``, ``os.posix_spawn``, ``os.spawn``: the child runs
code no tracer here sees). When a tracer or profiler is already set at the start
(coverage measuring the run, before 3.12), nothing is recorded and every test falls back.

Known gaps (documented): before 3.12, threads started before recording began are not
traced; and no code is seen that a test uses without executing it (a module constant of
a module another test imported dynamically).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from types import CodeType, FrameType
from typing import Any

import pytest

from cachekit_pytest.skip.profiling import Profile

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

#: Code objects by identity, ``id(code) -> code`` (the entry keeps the object alive, so
#: its id is not reused): CPython's code objects compare equal, with equal hashes, when
#: they differ only in their file name, so in a set (or as dict keys) identical functions
#: on the same line of two modules (small helpers, same-shaped ``__init__``s, generated
#: code) would be one, and a test that ran one module's recorded as running the other's (a
#: false skip when the first changes). Also cheaper: a code object's hash is not cached,
#: and hashes its constants and bytecode every time (0.1 to 2 microseconds).
Codes = dict[int, CodeType]

#: The recorder the audit hook reports to (audit hooks cannot be removed: one is added
#: per process, and reports to whichever recorder is running).
_ACTIVE: list[Recorder] = []
_AUDIT_HOOKED: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _ACTIVE:
        if event == "exec":
            _ACTIVE[-1].executing(args[0])
        elif event in SPAWN_EVENTS:
            _ACTIVE[-1].spawned()


class Window:
    """The project code executed while one test, fixture or collector ran."""

    __slots__ = ("codes", "complete")

    def __init__(self, codes: Codes | None = None) -> None:
        #: A test's is shared by the tests that ran the same code: never changed.
        self.codes: Codes = {} if codes is None else codes
        self.complete = True


class Recorder:
    """Records code objects by window (see the module docstring).

    ``is_project(filename)`` says whether a code object's file is a project file; it is
    asked once per file name.
    """

    def __init__(self, is_project: Callable[[str], bool]) -> None:
        self._is_project = is_project
        self._project: dict[str, bool] = {}
        self._seen: Codes = {}
        self._open: list[Window] = []
        self.tests: dict[str, Window] = {}
        self.items: dict[str, pytest.Item] = {}
        #: One copy of each distinct set of a test's code, by its ids (the copy keeps
        #: the objects alive, so an equal set of ids is the same objects).
        self._interned: dict[frozenset[int], Codes] = {}
        #: Per test, the ids of the fixture definitions it used.
        self.used: dict[str, set[int]] = {}
        self.fixtures: dict[int, tuple[object, Window]] = {}
        #: Project file name -> the code its import executed (a superset).
        self.imports: dict[str, Codes] = {}
        #: Code executed while collecting outside any collector's window.
        self.outside = Window()
        #: By collector node id, the code its collection executed.
        self.collectors: dict[str, Window] = {}
        #: Project files imported before recording began: their import is unknown.
        self.preloaded: frozenset[str] = frozenset()
        #: Nothing is recorded: a tracer was set before ours.
        self.blocked = False
        self.running = False
        #: The thread that runs the tests.
        self._thread = 0
        #: The window of the test running.
        self._phase: Window | None = None
        #: How code is seen: ``sys.monitoring`` (Python 3.12+) or ``cProfile``.
        self._backend: Monitoring | Profile = (
            Monitoring(self) if hasattr(sys, "monitoring") else Profile(self)
        )

    # -- starting and stopping ------------------------------------------------------------

    def start(self) -> None:
        if not self._backend.available():
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
        self._backend.install(attributing=True)

    def stop(self) -> None:
        if not self.running:
            return
        self._flush()
        self._backend.uninstall(final=True)
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self.running = False

    # -- windows --------------------------------------------------------------------------

    def is_project_file(self, filename: str) -> bool:
        known = self._project.get(filename)
        if known is None:
            known = self._project[filename] = self._is_project(filename)
        return known

    def _flush(self, *, drain: bool = True) -> None:
        """Hand what was executed since the last flush to the open windows (or, with
        none open before the tests, to `outside`); check our tracer still runs. Without
        ``drain``, what the backend holds stays there (a suspended test window's)."""
        seen = self._seen
        if not self.running:
            return
        if not self._backend.intact() and self._open:
            for window in self._open:
                window.complete = False
            self._backend.install(attributing=self._backend.attributing)
        if drain:
            self._backend.drain()
        self._backend.read_threads(stacks=bool(self._open))
        if not seen:
            return
        # Threads add meanwhile: the copy is atomic, and removing what it holds loses
        # nothing (an entry added again meanwhile is the same code, in the copy).
        snapshot = seen.copy()
        project = self._project
        codes: Codes = {}
        for key, code in snapshot.items():
            seen.pop(key, None)
            filename = code.co_filename
            known = project.get(filename)
            if known is None:
                known = self.is_project_file(filename)
            if known:
                codes[key] = code
        for window in self._open or (self.outside,):
            window.codes |= codes

    def open(self) -> Window:
        self._flush()
        window = Window()
        self._open.append(window)
        self._backend.restart()
        return window

    def close(self, window: Window) -> None:
        self._flush()
        self._remove(window)
        for code in window.codes.values():
            if code.co_name == "<module>":
                self.imports.setdefault(code.co_filename, {}).update(window.codes)

    def _remove(self, window: Window) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index] is window:
                del self._open[index]
                break

    def _importing(self, code: CodeType) -> None:
        """A module's code starts (it is being imported): from now on, and for the rest
        of the window, attribute what runs to the modules being imported. Tests that
        import nothing keep the cheaper tracer. (In another thread: the code goes to the
        windows, which then give the module all they ran, a superset.)"""
        if not self.is_project_file(code.co_filename):
            return  # a module of no project file (the examples a doctest runs, say)
        if not (self.running and self._backend.may_switch()):
            self._seen[id(code)] = code
            return
        self.imports.setdefault(code.co_filename, {})[id(code)] = code
        self._backend.install(attributing=True)

    def executing(self, code: object) -> None:
        """``exec`` of a code object (an audit event): when it is a project module's
        code in the thread that runs the tests, and the backend sees no imports, switch
        to the one that does before it runs (the C profiler keeps callers then: see
        `cachekit_pytest.skip.profiling`). Between windows, where nothing is recorded,
        the module counts as imported before recording began."""
        if not (
            isinstance(code, CodeType)
            and code.co_name == "<module>"
            and self.running
            and threading.get_ident() == self._thread
            and self.is_project_file(code.co_filename)
        ):
            return
        if not self._backend.active:  # between windows: what the import runs is unknown
            self.preloaded = self.preloaded | {code.co_filename}
        elif not self._backend.attributing and self._backend.intact():
            self._backend.install(attributing=True)

    def spawned(self) -> None:
        self.incomplete()

    def incomplete(self) -> None:
        """Code ran that no window will see: the windows open fall back."""
        for window in self._open:
            window.complete = False

    # -- hooks ----------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        if not self.running:
            return (yield)
        window = self.open()
        # Callers are kept from the moment a project module's code runs (`executing`),
        # as in a test's window: not for pytest's own collecting of every collector.
        self._backend.install(attributing=False)
        try:
            return (yield)
        finally:
            self.close(window)
            known = self.collectors.get(collector.nodeid)
            if known is None:
                self.collectors[collector.nodeid] = window
            else:  # collected again: both count
                known.codes |= window.codes
                known.complete = known.complete and window.complete

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_ignore_collect(self) -> Generator[None, Any, Any]:
        """Not recorded: whether a path is collected decides no test's outcome, and
        cachekit's own answer keys the test file there (parsing every file of its
        closure: under a tracer, most of a recording run's cost)."""
        with self.paused():
            return (yield)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing recorded meanwhile, outside tests (for cachekit's own work while
        collecting: keying files runs no project code). A project module imported
        meanwhile counts as imported before recording began (its import unknown)."""
        if not self.running or self._phase is not None:
            yield
            return
        self._flush()
        attributing = self._backend.attributing
        self._backend.uninstall()
        modules = set(sys.modules)
        try:
            yield
        finally:
            new = [sys.modules.get(name) for name in sys.modules.keys() - modules]
            unknown = {
                filename
                for module in new
                if isinstance(filename := getattr(module, "__file__", None), str)
                and self.is_project_file(filename)
            }
            if unknown:
                self.preloaded = self.preloaded | unknown
            self._backend.install(attributing=attributing)

    # A test's window is open during its setup, call and teardown only: not while pytest
    # makes and logs its reports, a good part of pytest's own calls per test.

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        if self.running:
            self._phase = Window()
            # What a backend still holds (a test whose teardown never ran): no window's.
            self._flush()
            self._backend.restart()  # a new window: disabled project code is seen again
        return (yield from self._in_phase(last=False))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from self._in_phase(last=False))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, Any]:
        try:
            return (yield from self._in_phase(last=True))
        finally:
            window, self._phase = self._phase, None
            if window is not None:
                known = self.tests.get(item.nodeid)
                if known is not None:  # run again (a rerun plugin): both count
                    window.codes |= known.codes
                    window.complete = window.complete and known.complete
                # One copy per distinct set (parametrized tests share), never changed.
                codes = self._interned.setdefault(frozenset(window.codes), window.codes)
                self.tests[item.nodeid] = Window(codes)
                self.tests[item.nodeid].complete = window.complete
                self.items[item.nodeid] = item
                # Every fixture the test used, those it asked for by name
                # (``request.getfixturevalue``) included: pytest forgets them after this.
                used = getattr(getattr(item, "_request", None), "_fixture_defs", None)
                if isinstance(used, dict):
                    known_used = self.used.setdefault(item.nodeid, set())
                    known_used.update(id(fixturedef) for fixturedef in used.values())

    def _in_phase(self, *, last: bool) -> Generator[None, Any, Any]:
        """One phase of a test: its window open, the backend recording. Between phases
        the backend is suspended, keeping what it saw (the C profiler's table): it is
        read once, when the last phase ends, not three times (reading it costs by the
        number of distinct functions called, pytest's own included). Code seen apart
        (other threads, `_seen`) is handed over at each phase's end as before."""
        window = self._phase
        if not self.running or window is None:
            return (yield)
        self._flush(drain=False)  # other threads' code since the last phase: no window's
        self._open.append(window)
        # No more attributing, until a module is imported.
        self._backend.install(attributing=False)
        try:
            return (yield)
        finally:
            if last:
                self.close(window)
                self._backend.uninstall()  # until the next test
            else:
                self._flush(drain=False)
                self._remove(window)
                self._backend.suspend()  # until the next phase

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


def fixture_windows(recorder: Recorder, item: pytest.Item) -> list[Window]:
    """The windows of the scoped fixtures ``item`` used: those it asked for by name
    too, and every definition of each of its fixture names (an override may call the
    fixture it overrides)."""
    ids = set(recorder.used.get(item.nodeid, ()))
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for name in getattr(item, "fixturenames", ()):
            ids.update(id(fixturedef) for fixturedef in info.name2fixturedefs.get(name, ()))
    return [recorder.fixtures[key][1] for key in sorted(ids) if key in recorder.fixtures]


def collector_windows(recorder: Recorder, item: pytest.Item) -> list[Window]:
    """The windows of the collectors ``item`` was collected under (its module, class,
    package...): code that ran there and not on import, such as a
    ``pytest_generate_tests`` that parametrizes it, decided what it runs."""
    found = []
    node = item.parent
    while node is not None:
        window = recorder.collectors.get(node.nodeid)
        if window is not None:
            found.append(window)
        node = node.parent
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


# -- how code is seen ---------------------------------------------------------------------

#: A ``sys.monitoring`` callback for ``PY_START``.
_Callback = Callable[[CodeType, int], object]


class Monitoring:
    """``sys.monitoring`` (Python 3.12+), two tool ids of its own, ``PY_START`` events,
    seen in every thread. Restarting events (`restart_events`) would re-enable every
    code object any tool disabled, and all the code a test runs would cost a callback
    again in each window; so the work is split:

    - the *finder* sees code start everywhere (global events) and disables any code at
      its first call, for good; project code it hands to the watcher;
    - the *watcher* has events on project code objects only (local events): its cheap
      callback adds the code to the set and disables it until the next window opens
      (`restart` sets that code's local events again, which re-enables them).

    The attributing callbacks (collecting, imports) walk the stack of each call of
    project code instead. A module's code (``<module>``) stays with the finder: it runs
    once per import."""

    NAME = "cachekit-skip-passed"
    #: Tool ids tried, in order: the finder's, then the watcher's (0, 1, 2 and 5 are the
    #: debugger's, coverage's, the profiler's and the optimizer's).
    TOOL_IDS = (4, 3)

    def __init__(self, recorder: Recorder) -> None:
        self.attributing = True
        self._recorder = recorder
        self._tool: int | None = None
        self._watcher: int | None = None
        self._monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 (Python 3.12+)
        #: Project code objects with the watcher's events, and those of them whose
        #: events were disabled since the last `restart`.
        self._watched: list[CodeType] = []
        self._disabled: list[CodeType] = []
        #: Whether the finder's events are set (`uninstall` keeps them).
        self._events = False
        #: Whether code is recorded (between `install` and `uninstall`).
        self.active = False
        self._find, self._cheap, self._attributing, self._idle = self._callbacks()

    def _callbacks(self) -> tuple[_Callback, _Callback, _Callback, _Callback]:
        """The finder's callback, and the watcher's: cheap, attributing and idle (between
        windows). Closures over locals: each runs for every code start it sees."""
        monitoring = self._monitoring
        disable = monitoring.DISABLE
        start = monitoring.events.PY_START
        set_local_events = monitoring.set_local_events
        recorder = self._recorder
        seen = recorder._seen
        ident = id
        attribute = self.attribute
        project = recorder._project
        is_project_file = recorder.is_project_file
        get_frame = sys._getframe
        watched = self._watched
        disabled = self._disabled

        def find(code: CodeType, offset: int) -> object:
            known = project.get(code.co_filename)
            if known is None:
                known = is_project_file(code.co_filename)
            if not known:
                return disable
            if code.co_name == "<module>":
                if self.active and self.attributing:
                    attribute(code, get_frame(1))
                elif self.active:
                    recorder._importing(code)
                return None
            if self._watcher is not None:
                set_local_events(self._watcher, code, start)
                watched.append(code)
            if self.active and self.attributing:
                attribute(code, get_frame(1))
            elif self.active:
                seen[ident(code)] = code
            return disable

        def cheap(code: CodeType, offset: int) -> object:
            seen[ident(code)] = code
            # Seen in this window: not again until the next one opens (`restart`).
            disabled.append(code)
            return disable

        def attributing(code: CodeType, offset: int) -> object:
            attribute(code, get_frame(1))
            return None

        def idle(code: CodeType, offset: int) -> object:
            return None

        return find, cheap, attributing, idle

    def attribute(self, code: CodeType, frame: FrameType | None) -> None:
        """Attributing: project code to the innermost project module being imported (a
        ``<module>`` frame on the stack from ``frame`` up), or else to the windows."""
        recorder = self._recorder
        project = recorder._project
        known = project.get(code.co_filename)
        if known is None:
            known = recorder.is_project_file(code.co_filename)
        if not known:
            return
        caller = frame
        while caller is not None:
            outer = caller.f_code
            if outer.co_name == "<module>":
                module = project.get(outer.co_filename)
                if module is None:
                    module = recorder.is_project_file(outer.co_filename)
                if module:
                    recorder.imports.setdefault(outer.co_filename, {})[id(code)] = code
                    return
            caller = caller.f_back
        recorder._seen[id(code)] = code

    def available(self) -> bool:
        monitoring = self._monitoring
        free = [tool for tool in self.TOOL_IDS if monitoring.get_tool(tool) is None]
        if len(free) < 2:
            return False
        self._tool, self._watcher = free[:2]
        monitoring.use_tool_id(self._tool, self.NAME)
        monitoring.use_tool_id(self._watcher, self.NAME)
        monitoring.register_callback(self._tool, monitoring.events.PY_START, self._find)
        return True

    def install(self, *, attributing: bool) -> None:
        if self._tool is None or self._watcher is None:
            return
        monitoring = self._monitoring
        if attributing and not self.attributing:
            # Code disabled since the window opened may run under a module's code now.
            self.restart()
        self.attributing = attributing
        callback = self._attributing if attributing else self._cheap
        try:
            monitoring.register_callback(self._watcher, monitoring.events.PY_START, callback)
            if not self._events:
                monitoring.set_events(self._tool, monitoring.events.PY_START)
                self._events = True
            self.active = True
        except ValueError:  # a tool id was freed by someone else: nothing is seen now
            self._tool = self._watcher = None

    def uninstall(self, *, final: bool = False) -> None:
        self.active = False
        if self._tool is None or self._watcher is None:
            return
        monitoring = self._monitoring
        try:
            if final:
                monitoring.set_events(self._tool, 0)
                self._events = False
                for code in self._watched:
                    monitoring.set_local_events(self._watcher, code, 0)
                for tool in (self._tool, self._watcher):
                    monitoring.register_callback(tool, monitoring.events.PY_START, None)
                    monitoring.free_tool_id(tool)
            else:
                # Until the next window: events stay set (setting them again would
                # instrument every code object again), and record nothing.
                monitoring.register_callback(self._watcher, monitoring.events.PY_START, self._idle)
        except ValueError:  # freed by someone else
            self._tool = self._watcher = None
        if final:
            self._tool = self._watcher = None
            self._watched.clear()
            self._disabled.clear()

    def suspend(self) -> None:
        """Between the phases of a test: nothing is held apart from `_seen`, so the
        same as `uninstall`."""
        self.uninstall()

    def restart(self) -> None:
        """A window opens: project code disabled since the last restart is seen again
        (setting a code object's local events re-enables those it disabled; other
        tools' disabled events stay so)."""
        if self._watcher is None or not self._disabled:
            return
        set_local_events = self._monitoring.set_local_events
        start = self._monitoring.events.PY_START
        for code in self._disabled:
            set_local_events(self._watcher, code, 0)
            set_local_events(self._watcher, code, start)
        self._disabled.clear()

    def drain(self) -> None:
        """Nothing to do: the callbacks add to the recorder's set as code runs."""

    def read_threads(self, *, stacks: bool) -> None:
        """Nothing to do: ``sys.monitoring`` sees every thread."""

    def intact(self) -> bool:
        return all(
            tool is not None and self._monitoring.get_tool(tool) == self.NAME
            for tool in (self._tool, self._watcher)
        )

    def may_switch(self) -> bool:
        return True
