"""JUnit XML from any runner (pytest, unittest-xml-reporting, PyTorch-style reports) as
per-test records.

Rules (DESIGN.md, "Test statistics", after PyTorch's tooling):

- attribute values become numbers where they parse, and child elements become nested
  values (`element_value`);
- a case counts as failure > error > skipped > success, whatever order its children
  come in;
- a missing ``file`` attribute is rebuilt from a dotted classname
  (``tests.test_x.TestY`` -> ``tests/test_x.py``: trailing capitalized segments are
  classes);
- ``rerun``, ``rerunFailure``, ``rerunError``, ``flakyFailure`` and ``flakyError``
  children count as reruns; a case that passed after reruns is flaky.

Parsing is safe on untrusted input: a document type declaration or an entity declaration
is refused (no DTDs, no entity expansion, no external fetches), like defusedxml, with
the standard library's expat only. Malformed XML raises `JUnitError` naming the file and
line.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pyexpat import ExpatError, ParserCreate
from typing import Any, Literal

import attrs

from cachekit.errors import CacheError

#: What became of one test case (not `cachekit.values.merge.Outcome`, the merge of
#: pytest's last-failed observations).
CaseOutcome = Literal["passed", "failed", "error", "skipped"]
#: Worst first: a case with several of these children counts as the first present.
_PRECEDENCE: tuple[tuple[str, CaseOutcome], ...] = (
    ("failure", "failed"),
    ("error", "error"),
    ("skipped", "skipped"),
)
RERUN_TAGS = frozenset({"rerun", "rerunFailure", "rerunError", "flakyFailure", "flakyError"})
#: Longest message kept per case (the first line of a failure usually says it all).
MAX_MESSAGE = 1000
_NUMBER = re.compile(r"^[+-]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class JUnitError(CacheError, ValueError):
    """A report that is not well-formed JUnit XML, or that uses a refused feature."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


@attrs.frozen
class TestCase:
    """One test case of one report."""

    __test__ = False  # not a pytest test class

    #: Path of the test file, as the report gives it or rebuilt from the classname.
    file: str
    classname: str
    name: str
    outcome: CaseOutcome
    #: Seconds; 0.0 when the report does not say.
    duration: float = 0.0
    #: How many rerun or flaky attempts the report records before the final outcome.
    reruns: int = 0
    #: The deciding failure, error or skip message (first line), or "".
    message: str = ""

    @property
    def test_id(self) -> str:
        """A pytest-style node id: ``tests/test_x.py::TestY::test_a``."""
        return join_test_id(test_id_prefix(self.file, self.classname), self.name)

    @property
    def flaky(self) -> bool:
        """Passed, but only after failing attempts."""
        return self.outcome == "passed" and self.reruns > 0

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error")


@attrs.frozen
class Report:
    """The test cases of one JUnit XML document."""

    source: str
    cases: tuple[TestCase, ...]


def parse_junit_file(path: str | os.PathLike[str]) -> Report:
    """Parse one JUnit XML file; raises `JUnitError` (with file and line) if malformed."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError as error:
        raise JUnitError(source, None, f"cannot read: {error.strerror or error}") from None
    return parse_junit(data, source=source)


def parse_junit(data: bytes | str, *, source: str = "<report>") -> Report:
    """Parse a JUnit XML document (``<testsuites>`` or ``<testsuite>`` at the root)."""
    root, lines = _parse_tree(data.encode("utf-8") if isinstance(data, str) else data, source)
    if root.tag not in ("testsuites", "testsuite"):
        raise JUnitError(
            source, lines.get(root), f"not a JUnit report: the root element is <{root.tag}>"
        )
    return Report(source, tuple(_case(element, source, lines) for element in root.iter("testcase")))


def element_value(element: ET.Element) -> dict[str, Any]:
    """An element as nested values: numeric attributes as numbers, other attributes as
    text, non-blank text under ``"text"``, and each child under its tag (a list when the
    tag repeats)::

        <testcase name="t" time="1.5"><failure message="boom">trace</failure></testcase>
        -> {"name": "t", "time": 1.5, "failure": {"message": "boom", "text": "trace"}}
    """
    value: dict[str, Any] = {name: parse_number(text) for name, text in element.attrib.items()}
    text = (element.text or "").strip()
    if text:
        value["text"] = text
    for child in element:
        child_value = element_value(child)
        if child.tag not in value:
            value[child.tag] = child_value
        elif isinstance(value[child.tag], list):
            value[child.tag].append(child_value)
        else:
            value[child.tag] = [value[child.tag], child_value]
    return value


def parse_number(text: str) -> int | float | str:
    """``text`` as an int or a finite float if it is one (``1,234.5`` too), else as is."""
    stripped = text.strip()
    if not _NUMBER.match(stripped):
        return text
    plain = stripped.replace(",", "")
    try:
        return int(plain)
    except ValueError:
        pass
    number = float(plain)
    return number if math.isfinite(number) else text


def file_from_classname(classname: str) -> str:
    """``tests.test_x.TestY`` -> ``tests/test_x.py``; "" when there is no module part."""
    segments = [segment for segment in classname.split(".") if segment]
    classes = _class_segments(classname)
    module = segments[: len(segments) - len(classes)]
    return "/".join(module) + ".py" if module else ""


def test_id_prefix(file: str, classname: str) -> str:
    """What the test ids of the cases of one file and classname start with:
    ``tests/test_x.py::TestY`` (computed once for many cases by `cachekit.stats.cases`)."""
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    if module and classname == module:
        classes = ""
    elif module and classname.startswith(module + "."):
        classes = classname[len(module) + 1 :]
    else:
        classes = ".".join(_class_segments(classname)) if file else ""
    head = file or classname
    return "::".join(part for part in (head, *classes.split(".")) if part)


def join_test_id(prefix: str, name: str) -> str:
    """A test id from `test_id_prefix` and the case's name."""
    return f"{prefix}::{name}" if prefix and name else prefix or name


def _class_segments(classname: str) -> list[str]:
    """The trailing capitalized segments of a dotted classname: its (nested) classes."""
    segments = [segment for segment in classname.split(".") if segment]
    classes: list[str] = []
    while segments and segments[-1][:1].isupper():
        classes.insert(0, segments.pop())
    return classes


def _case(element: ET.Element, source: str, lines: dict[ET.Element, int]) -> TestCase:
    value = element_value(element)
    attributes = element.attrib
    classname = attributes.get("classname", "")
    file = attributes.get("file", "").replace("\\", "/").removeprefix("./")
    outcome: CaseOutcome = "passed"
    message = ""
    for tag, candidate in _PRECEDENCE:
        if tag in value:
            outcome = candidate
            message = _message(value[tag])
            break
    duration = value.get("time", 0.0)
    if not isinstance(duration, (int, float)):
        raise JUnitError(source, lines.get(element), f"testcase time is not a number: {duration!r}")
    return TestCase(
        file=file or file_from_classname(classname),
        classname=classname,
        name=attributes.get("name", ""),
        outcome=outcome,
        duration=max(0.0, float(duration)),
        reruns=sum(1 for child in element if child.tag in RERUN_TAGS),
        message=message,
    )


def _message(value: Any) -> str:
    """The message of a failure/error/skipped value: its attribute, else its first line."""
    if isinstance(value, list):
        value = value[0]
    if not isinstance(value, dict):
        return ""
    text = value.get("message")
    if text is None or text == "":
        text = value.get("text", "")
    lines = str(text).strip().splitlines()
    return lines[0][:MAX_MESSAGE] if lines else ""


def _parse_tree(data: bytes, source: str) -> tuple[ET.Element, dict[ET.Element, int]]:
    """Build an ElementTree with expat, refusing DTDs and entity declarations.

    Returns the root and the line each element starts on.
    """
    builder = ET.TreeBuilder()
    parser = ParserCreate()
    parser.buffer_text = True
    lines: dict[ET.Element, int] = {}

    def start(tag: str, attributes: dict[str, str]) -> None:
        lines[builder.start(tag, attributes)] = parser.CurrentLineNumber

    def end(tag: str) -> None:
        builder.end(tag)

    def refuse(what: str) -> Any:
        def handler(*_args: object) -> None:
            raise JUnitError(
                source, parser.CurrentLineNumber, f"refusing {what}: JUnit reports need none"
            )

        return handler

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse("a document type declaration (<!DOCTYPE>)")
    parser.EntityDeclHandler = refuse("an entity declaration (<!ENTITY>)")
    parser.UnparsedEntityDeclHandler = refuse("an entity declaration (<!ENTITY>)")
    parser.ExternalEntityRefHandler = refuse("an external entity")
    try:
        parser.Parse(data, True)
    except ExpatError as error:
        raise JUnitError(source, error.lineno, f"malformed XML: {_expat_problem(error)}") from None
    return builder.close(), lines


def _expat_problem(error: ExpatError) -> str:
    """expat's message without its own ``: line N, column M`` suffix."""
    return re.sub(r": line \d+, column \d+$", "", str(error))
