"""JUnit XML parsing: one fixture file per rule, plus malformed and hostile input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cachekit.errors import CacheError
from cachekit.stats.junit import (
    JUnitError,
    TestCase,
    element_value,
    file_from_classname,
    parse_junit,
    parse_junit_file,
    parse_number,
)

DATA = Path(__file__).parent / "data" / "junit"


def cases(name: str) -> dict[str, TestCase]:
    report = parse_junit_file(DATA / name)
    assert report.source == str(DATA / name)
    return {case.name: case for case in report.cases}


def test_pytest_default_report() -> None:
    found = cases("pytest_xunit2.xml")
    assert list(found) == [
        "test_add",
        "test_by_zero",
        "test_exact[4-2]",
        "test_read",
        "test_write",
        "test_xfail",
        "test_nested",
    ]
    assert found["test_add"] == TestCase(
        file="tests/test_math.py",
        classname="tests.test_math",
        name="test_add",
        outcome="passed",
        duration=0.125,
    )
    assert found["test_by_zero"].outcome == "failed"
    assert found["test_by_zero"].message == "ZeroDivisionError: division by zero"
    assert found["test_exact[4-2]"].outcome == "passed"  # properties/system-out are not outcomes
    assert found["test_read"].outcome == "error"
    assert found["test_read"].message == 'failed on setup with "FileNotFoundError"'
    assert found["test_write"].outcome == "skipped"
    assert found["test_write"].message == "needs a disk"
    assert found["test_xfail"].outcome == "skipped"


def test_test_ids_are_pytest_node_ids() -> None:
    found = cases("pytest_xunit2.xml")
    assert found["test_add"].test_id == "tests/test_math.py::test_add"
    assert found["test_exact[4-2]"].test_id == "tests/test_math.py::TestDivide::test_exact[4-2]"
    assert found["test_nested"].test_id == "tests/test_io.py::TestOuter::TestInner::test_nested"
    xunit1 = cases("pytest_xunit1.xml")
    assert xunit1["test_get"].test_id == "pkg/tests/test_api.py::TestClient::test_get"
    assert xunit1["test_module_level"].test_id == "pkg/tests/test_api.py::test_module_level"


def test_failure_beats_error_beats_skipped() -> None:
    found = cases("precedence.xml")
    assert found["skip_error_failure"].outcome == "failed"
    assert found["skip_error_failure"].message == "failure third"
    assert found["skip_then_error"].outcome == "error"
    assert found["skip_then_error"].message == "the error"
    # A failure during the call and an error during teardown: a failure.
    assert cases("pytest_xunit2.xml")["test_nested"].outcome == "failed"


def test_message_falls_back_to_first_line_of_text() -> None:
    assert cases("precedence.xml")["message_from_text"].message == "first line of the trace"


def test_missing_time_is_zero() -> None:
    assert cases("precedence.xml")["skip_then_error"].duration == 0.0


def test_file_attribute_is_kept_or_rebuilt_from_dotted_classname() -> None:
    assert cases("unittest_xml_reporting.xml")["test_create"].file == "tests/test_models.py"
    assert cases("pytest_xunit2.xml")["test_nested"].file == "tests/test_io.py"
    torch = cases("pytorch_style.xml")
    assert torch["test_matmul"].file == "test_torch.py"
    assert torch["test_conv2d"].file == "test_nn.py"


@pytest.mark.parametrize(
    ("classname", "file"),
    [
        ("tests.test_x.TestY", "tests/test_x.py"),
        ("tests.test_x", "tests/test_x.py"),
        ("tests.test_x.TestY.TestZ", "tests/test_x.py"),
        ("test_x", "test_x.py"),
        ("TestOnlyAClass", ""),
        ("", ""),
    ],
)
def test_file_from_classname(classname: str, file: str) -> None:
    assert file_from_classname(classname) == file


def test_unittest_xml_reporting_single_suite_root() -> None:
    found = cases("unittest_xml_reporting.xml")
    assert [case.outcome for case in found.values()] == ["passed", "failed", "skipped"]
    assert found["test_email"].message == "'a@b' != 'a@b.c'"
    assert found["test_email"].test_id == "tests/test_models.py::TestUser::test_email"


def test_numbers_parse_including_thousands_separators() -> None:
    torch = cases("pytorch_style.xml")
    assert torch["test_matmul"].duration == 1234.5
    assert torch["test_conv2d"].duration == 4.0


def test_rerun_elements_mark_flaky_cases() -> None:
    torch = cases("pytorch_style.xml")
    assert torch["test_flaky_cuda"].reruns == 2
    assert torch["test_flaky_cuda"].outcome == "passed"
    assert torch["test_flaky_cuda"].flaky
    assert torch["test_always_fails"].reruns == 1
    assert torch["test_always_fails"].outcome == "failed"
    assert not torch["test_always_fails"].flaky
    assert not torch["test_matmul"].flaky
    surefire = cases("surefire_flaky.xml")
    assert surefire["flakyFailurePasses"].flaky
    assert surefire["flakyErrorPasses"].flaky
    assert surefire["alwaysFails"].reruns == 2
    assert surefire["alwaysFails"].outcome == "failed"
    assert not surefire["alwaysFails"].flaky


def test_nested_suites_are_walked() -> None:
    assert set(cases("nested_suites.xml")) == {"test_x", "test_y"}


def test_element_value_numbers_and_nested_children() -> None:
    element = ET.fromstring(
        '<testcase name="t" time="1.5" line="7" id="007x">'
        '<failure message="boom">trace</failure>'
        '<property name="a" value="1"/><property name="b" value="x"/>'
        "</testcase>"
    )
    assert element_value(element) == {
        "name": "t",
        "time": 1.5,
        "line": 7,
        "id": "007x",
        "failure": {"message": "boom", "text": "trace"},
        "property": [{"name": "a", "value": 1}, {"name": "b", "value": "x"}],
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-3", -3),
        ("0.25", 0.25),
        ("1,234.5", 1234.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("nan", "nan"),
        ("inf", "inf"),
        ("abc", "abc"),
        ("", ""),
        ("1.2.3", "1.2.3"),
    ],
)
def test_parse_number(text: str, value: object) -> None:
    assert parse_number(text) == value
    assert type(parse_number(text)) is type(value)


def test_names_that_look_like_numbers_stay_text() -> None:
    report = parse_junit(b'<testsuite><testcase classname="t" name="1e5"/></testsuite>')
    assert report.cases[0].name == "1e5"


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("malformed_mismatched.xml", 5, "mismatched tag"),
        ("malformed_truncated.xml", 4, "no element found"),
        ("malformed_empty.xml", 1, "no element found"),
        ("malformed_billion_laughs.xml", 2, "document type declaration"),
        ("malformed_external_entity.xml", 2, "document type declaration"),
        ("malformed_undefined_entity.xml", 1, "undefined entity"),
        ("not_junit.xml", 1, "not a JUnit report"),
        ("malformed_bad_time.xml", 4, "time is not a number"),
    ],
)
def test_malformed_reports_raise_clear_errors(name: str, line: int, fragment: str) -> None:
    path = DATA / name
    with pytest.raises(JUnitError) as info:
        parse_junit_file(path)
    error = info.value
    assert isinstance(error, CacheError)
    assert isinstance(error, ValueError)
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: ")
    assert fragment in str(error)


def test_doctype_refused_in_any_encoding() -> None:
    text = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE x [<!ENTITY a "b">]><testsuite/>'
    with pytest.raises(JUnitError, match="document type declaration"):
        parse_junit(text.encode("utf-16"))


def test_external_entity_refused() -> None:
    with pytest.raises(JUnitError, match="refusing"):
        parse_junit(b'<!DOCTYPE t [<!ENTITY e SYSTEM "file:///etc/passwd">]><t>&e;</t>')


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(JUnitError, match="cannot read"):
        parse_junit_file(tmp_path / "missing.xml")


def test_text_input_and_utf8_names() -> None:
    report = parse_junit('<testsuite><testcase classname="t.test_ü" name="test_ß"/></testsuite>')
    assert report.cases[0].test_id == "t/test_ü.py::test_ß"
