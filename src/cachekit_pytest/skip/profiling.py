"""How the recorder (`cachekit_pytest.skip.tracing.Recorder`) sees code before Python
3.12: the C profiler of the standard library, ``cProfile.Profile`` (``sys.setprofile``
for the thread that runs the tests).

Why: a trace function written in Python (``sys.settrace``) costs a Python call for every
call the program makes, pytest's own and the standard library's included; the C profiler
costs a fraction of that (measured on Python 3.11: 0.52 against 0.31 microseconds a call,
against 0.07 without either). It does not say, while code runs, which module is being
imported; it keeps, for each code object called, the code objects that called it. So
what an import executed is read from that call graph when a window is flushed: every
project code object reachable from a project module's ``<module>`` code, through any
code but another project module's ``<module>`` (that module's own import), a superset of
what ran under it. A flush while a project module's code is on the stack (a window
opened during an import) gives that module everything the flush saw too.

Keeping callers costs (about a tenth more a call, and twice the time to read a window's
calls), so a window (a test's, a collector's) starts with a profiler that keeps none;
when a project module's code is about to run (the ``exec`` audit event,
`cachekit_pytest.skip.tracing.Recorder.executing`), the recorder switches to the one
that does for the rest of the window. Should a module's code run unannounced under the
first, the module gets everything that flush saw.

A profiler sees only the thread that enabled it, so each thread started while recording
enables one of its own, flat, at its first event (``threading.setprofile``,
`ThreadProfiles`), read from the thread that runs the tests at every flush. A Python trace
function there instead cost a Python call for each call, and each of those raised audit
events (``frame.f_code``, ``id``) that the recorder's audit hook answers in Python: a
test whose hundred threads make ten million calls took 11 times its plain run, 3 times
with the C profiler.
"""

from __future__ import annotations

import cProfile
import gc
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cachekit_pytest.skip.tracing import Codes, Recorder

_MODULE = "<module>"


class Profile:
    """The recorder's backend before Python 3.12 (see the module docstring); the same
    interface as `cachekit_pytest.skip.tracing.Monitoring`."""

    def __init__(self, recorder: Recorder) -> None:
        #: Kept for the recorder's interface: the call graph attributes imports anyway.
        self.attributing = True
        self._recorder = recorder
        #: While attributing (from a project module's code starting, until its window
        #: ends): with callers, to read imports from. Else without (cheaper to run and to
        #: read), and a module imported unannounced gets all a flush saw.
        self._graph = cProfile.Profile(builtins=False)
        self._flat = cProfile.Profile(builtins=False, subcalls=False)
        self._profiler = self._graph
        self._enabled = False
        #: Between the phases of a test (`suspend`): disabled, its table kept.
        self._suspended = False
        #: Threads started while recording, each with a profiler of its own.
        self._threads = ThreadProfiles(recorder._seen, recorder.incomplete)

    def available(self) -> bool:
        """Not when a tracer or profiler is set already (coverage measuring the run):
        replacing a profiler would break it, and a run under a tracer records nothing
        as before."""
        return sys.gettrace() is None and sys.getprofile() is None

    def install(self, *, attributing: bool) -> None:
        profiler = self._graph if attributing else self._flat
        if self._suspended and profiler is self._profiler:
            self._suspended = False  # a test's next phase: on with the same table
            profiler.enable()
            return
        if self._enabled and profiler is not self._profiler:
            self.drain()
            self.uninstall()
        self.attributing = attributing
        self._profiler = profiler
        threading.setprofile(self._threads.start)
        profiler.enable()
        self._enabled = True

    def uninstall(self, *, final: bool = False) -> None:
        if self._enabled:  # the recorder flushed just before: the rest is no window's
            if _profile() is self._profiler:
                self._profiler.disable()
            self._profiler.clear()
            self._enabled = False
            self._suspended = False
        if final:
            threading.setprofile(None)
            self._threads.retire()

    def suspend(self) -> None:
        """Between the phases of a test: disabled, keeping what it saw for the test's
        window (drained when the test ends, or before another window opens). Whether it
        was still ours was checked just before (`intact`)."""
        if self._enabled and not self._suspended:
            if _profile() is self._profiler:
                self._profiler.disable()
            self._suspended = True

    @property
    def active(self) -> bool:
        """Whether code is recorded (between `install` and `uninstall`, not suspended)."""
        return self._enabled and not self._suspended

    def restart(self) -> None:
        """Nothing to do: every call is seen."""

    def intact(self) -> bool:
        """Whether our profiler is still the one set (a test may set its own); checked
        when it was suspended, if it is."""
        return self._enabled and (self._suspended or _profile() is self._profiler)

    def may_switch(self) -> bool:
        """Imports are read from the call graph: no other mode to switch to."""
        return False

    def read_threads(self, *, stacks: bool) -> None:
        """Hand what other threads ran since the last read to the recorder (with
        ``stacks``, what they are running too)."""
        self._threads.read(stacks=stacks)

    def drain(self) -> None:
        """Hand the code called since the last drain to the recorder: to its set of
        code seen, and what project modules' code reached to their imports."""
        if not self._enabled:
            return
        profiler = self._profiler
        ours = _profile() is profiler  # else disabling would unset another's
        if ours:
            profiler.disable()
        try:
            entries = profiler.getstats()
            profiler.clear()
        finally:
            if ours:
                profiler.enable()
        if entries:
            self._record(entries, graph=profiler is self._graph)

    def _record(self, entries: list[Any], *, graph: bool) -> None:
        recorder = self._recorder
        is_project = recorder.is_project_file
        project = recorder._project
        # By identity (`Codes`): an entry is one code object (the profiler keys them by
        # address), and look-alikes of other files compare equal.
        modules: Codes = {}
        codes: Codes = {}
        for entry in entries:
            code = entry.code
            if code.__class__ is not CodeType:
                continue  # a built-in (only with builtins=True)
            known = project.get(code.co_filename)
            if known is None:
                known = is_project(code.co_filename)
            if known:
                (modules if code.co_name == _MODULE else codes)[id(code)] = code
        if not codes and not modules:
            return
        importing = _importing_frames(is_project)
        imports = recorder.imports
        if modules:
            callees = {
                id(entry.code): [call.code for call in entry.calls or ()]
                for entry in entries
                if entry.code.__class__ is CodeType
            }
            for key, module in modules.items():
                found = imports.setdefault(module.co_filename, {})
                found[key] = module
                if not graph:  # no callers kept: all this flush saw
                    found.update(codes)
                else:
                    found.update(_reachable(module, callees, is_project))
        for filename in importing:
            found = imports.setdefault(filename, {})
            found.update(codes)
            found.update(modules)
        recorder._seen.update(codes)


def _reachable(
    module: CodeType, callees: dict[int, list[Any]], is_project: Callable[[str], bool]
) -> Codes:
    """The project code reachable from ``module`` in the call graph (``callees`` by the
    caller's id), not through another project module's code."""
    found: Codes = {}
    visited = {id(module)}
    stack = [module]
    while stack:
        for callee in callees.get(id(stack.pop()), ()):
            key = id(callee)
            if key in visited or not isinstance(callee, CodeType):
                continue
            visited.add(key)
            project = is_project(callee.co_filename)
            if project and callee.co_name == _MODULE:
                continue
            if project:
                found[key] = callee
            stack.append(callee)
    return found


def _importing_frames(is_project: Callable[[str], bool]) -> list[str]:
    """The project modules whose code is on this thread's stack: being imported."""
    found = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == _MODULE and is_project(code.co_filename):
            found.append(code.co_filename)
        frame = frame.f_back
    return found


#: Threads' profilers no longer read, kept for the life of the process: deallocating an
#: enabled ``cProfile.Profile`` unsets the profile function of the thread that drops the
#: last reference to it (``profiler_dealloc`` in CPython), the recorder's own profiler in
#: the thread that runs the tests. Each is a small object once its table is cleared.
_RETIRED: list[cProfile.Profile] = []


class _ThreadProfile:
    """One thread's profiler, and how many calls of each code object it had returned
    from at the last read."""

    __slots__ = ("profiler", "returns", "thread")

    def __init__(self, thread: threading.Thread, profiler: cProfile.Profile) -> None:
        self.thread = thread
        self.profiler = profiler
        self.returns: dict[int, int] = {}


class ThreadProfiles:
    """The C profilers of the threads started while recording (before Python 3.12), read
    by the thread that runs the tests into the recorder's set of code seen (``seen``),
    which the next flush hands to the windows open.

    A profiler lists only code that returned at least once (its table counts a call when
    it returns), so a read hands over what returned since the last read (its count
    changed: a table is never cleared, since clearing it from another thread loses the
    calls under way) and the code on the thread's stack (running, perhaps never to return:
    a worker's loop). A call that returns between the two is handed over at the next read:
    in a later window, as what a thread runs can be anyway. Reading a profiler that its
    thread may update is safe because nothing in ``getstats`` lets another thread run:
    it is C code holding the GIL, once the garbage collector (which could run finalizers
    written in Python) is off.
    """

    def __init__(self, seen: Codes, incomplete: Callable[[], None]) -> None:
        self._seen = seen
        #: Called when a profiler's table could not be read: the windows open lose it.
        self._incomplete = incomplete
        self._threads: list[_ThreadProfile] = []

    def start(self, frame: FrameType, event: str, arg: object) -> None:
        """A thread's first profiling event (``threading.setprofile``): from now on its
        own C profiler sees its calls (enabling it replaces this function there)."""
        profiler = cProfile.Profile(builtins=False, subcalls=False)
        self._threads.append(_ThreadProfile(threading.current_thread(), profiler))
        profiler.enable()
        self._seen[id(frame.f_code)] = frame.f_code  # under way: the profiler missed it

    def read(self, *, stacks: bool) -> None:
        """Hand what each thread ran since the last read to the recorder's set, and with
        ``stacks`` the code on its stack (not between windows, where it would count for
        every test: code still running then is read again when the next window ends)."""
        if not self._threads:
            return
        threads = list(self._threads)
        # A thread that ended before its table is read: the table is final, then dropped.
        ended = [profile for profile in threads if not profile.thread.is_alive()]
        tables = self._tables(threads)
        frames = sys._current_frames() if stacks else {}
        seen = self._seen
        for profile, entries in zip(threads, tables, strict=True):
            returns = profile.returns
            for entry in entries:
                code = entry.code
                key = id(code)
                if returns.get(key) != entry.callcount and code.__class__ is CodeType:
                    returns[key] = entry.callcount
                    seen[key] = code
            frame = frames.get(profile.thread.ident or 0)
            while frame is not None:
                seen[id(frame.f_code)] = frame.f_code
                frame = frame.f_back
        for profile in ended:
            self._threads.remove(profile)  # not rebuilt: a thread may be appending
            profile.profiler.clear()
            _RETIRED.append(profile.profiler)

    def retire(self) -> None:
        """Recording ends: read no thread's profiler any more (a thread still running
        keeps its own, as its profile function)."""
        _RETIRED.extend(profile.profiler for profile in self._threads)
        self._threads.clear()

    def _tables(self, threads: list[_ThreadProfile]) -> list[list[Any]]:
        """Each thread's profiler table, read with the garbage collector off (see the
        class docstring)."""
        tables: list[list[Any]] = []
        collecting = gc.isenabled()
        gc.disable()
        try:
            for profile in threads:
                try:
                    tables.append(profile.profiler.getstats())
                except MemoryError:  # the profiler could not allocate: calls were lost
                    tables.append([])
                    self._incomplete()
        finally:
            if collecting:
                gc.enable()
        return tables


def _profile() -> object:
    """The profile function set for this thread (a ``cProfile.Profile`` for one)."""
    return sys.getprofile()
