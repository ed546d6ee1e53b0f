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

Threads started during the run are seen by a Python trace function
(``threading.settrace``) as before: the profiler sees only the thread that enabled it.
"""

from __future__ import annotations

import cProfile
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
        seen = recorder._seen
        importing = recorder._importing

        def threads(frame: FrameType, event: str, arg: object) -> None:
            code = frame.f_code
            if code.co_name == _MODULE:
                importing(code)  # in another thread: to the windows, a superset
            else:
                seen[id(code)] = code

        self._threads = threads

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
        threading.settrace(self._threads)
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
            threading.settrace(None)

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


def _profile() -> object:
    """The profile function set for this thread (a ``cProfile.Profile`` for one)."""
    return sys.getprofile()
