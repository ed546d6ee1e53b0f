"""``cachekit stats report``: the data behind each plot, computed from what real pytest
runs recorded, and the page itself, opened in headless Chromium with every network
request refused."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NoReturn

import attrs
import pytest

from cachekit import open_store
from cachekit.ci.commit import COMMIT_VARIABLES
from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.stats.junit import TestCase
from cachekit.stats.report import (
    UNSHARDED,
    build_report,
    group_ci_runs,
    shard_balance,
    shard_of,
)
from cachekit.stats.report_html import render_html
from cachekit.stats.runs import Run, load_runs, record_runs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_CHROMIUM = "apt-get install chromium (Debian's package; .ci/run installs it)"
INSTALL_PLAYWRIGHT = "pip install playwright (in the 'test' extra; no browser download needed)"

#: The namespace every run below writes to, and the report reads.
NAMESPACE = {"repository": "acme/app", "ref": "main", "job": "test"}
RUN_IDS = ("ci-1", "ci-2", "ci-3")
SCRIPT = "<script>alert(1)</script>"

SUITE = {
    "test_fast.py": """
def test_one(): pass
def test_two(): pass
def test_three(): pass
""",
    "test_slow.py": """
import time
def test_slow(): time.sleep(0.4)
def test_medium(): time.sleep(0.15)
""",
    "test_unstable.py": """
import os
from pathlib import Path

def test_flaky():
    # Fails on the first attempt of every CI run, passes on its rerun.
    marker = Path(__file__).with_name("attempted-" + os.environ["CACHEKIT_RUN_ID"])
    if not marker.exists():
        marker.write_text("")
        assert False, "first attempt fails"

def test_broken():
    # Broken in the first two CI runs, fixed in the third.
    assert os.environ["CACHEKIT_RUN_ID"] == "ci-3", "<b>boom</b> & more"
""",
    "test_escape.py": """
import pytest
@pytest.mark.parametrize("text", ["<script>alert(1)</script>"], ids=str)
def test_markup(text): pass
""",
}
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--reruns=1"]
#: Which files each shard runs.
SHARDS = {"1/2": ["test_fast.py", "test_slow.py"], "2/2": ["test_unstable.py", "test_escape.py"]}


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any cachekit or outer pytest settings, nor the
    commit a CI system names (the runs below test no commit in particular)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CACHEKIT_", "PYTEST_")) and name not in COMMIT_VARIABLES
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory store filled by real pytest runs with the plugin: three CI runs of
    two shards each (the shards of a run at the same time), with a flaky test, a test
    that fails in two runs, and a test named like markup."""
    project = tmp_path_factory.mktemp("project")
    store = tmp_path_factory.mktemp("store")
    (project / "pytest.ini").write_text("[pytest]\n")
    for name, source in SUITE.items():
        (project / name).write_text(source)
    for run_id in RUN_IDS:
        shards = [
            subprocess.Popen(
                [*PYTEST, f"--cache-url={store}", f"--cache-shard={shard}", *files],
                cwd=project,
                env=clean_environment(
                    CACHEKIT_REPOSITORY=NAMESPACE["repository"],
                    CACHEKIT_REF=NAMESPACE["ref"],
                    CACHEKIT_JOB=NAMESPACE["job"],
                    CACHEKIT_RUN_ID=run_id,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for shard, files in SHARDS.items()
        ]
        for process in shards:
            output, _ = process.communicate(timeout=120)
            assert process.returncode in (0, 1), output  # 1: test_broken failed
        time.sleep(0.05)  # distinct start times, as CI runs have
    return store


def the_namespace(*, shard: str | None = None, run_id: str | None = None) -> Namespace:
    """`NAMESPACE`, whatever the environment says."""
    return detect_namespace(
        {},
        repository=NAMESPACE["repository"],
        ref=NAMESPACE["ref"],
        job=NAMESPACE["job"],
        shard=shard,
        run_id=run_id,
    )


def stored_runs(store: Path) -> list[Run]:
    return load_runs(namespaced_cache(open_store(str(store)), the_namespace()))


def cachekit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        capture_output=True,
        text=True,
        env=clean_environment(),
        input=stdin,
        check=False,
    )


def namespace_options() -> list[str]:
    return [option for name, value in NAMESPACE.items() for option in (f"--{name}", value)]


# -- the data -------------------------------------------------------------------------


def test_the_report_data_follows_what_the_runs_recorded(store: Path) -> None:
    report = build_report(stored_runs(store), top=3)

    assert [run.name for run in report.runs] == list(RUN_IDS)
    assert report.reports == 6
    assert report.tests == 8
    assert len(report.slowest) == 3
    assert [item.test_id for item in report.slowest[:2]] == [
        "test_slow.py::test_slow",
        "test_slow.py::test_medium",
    ]
    assert report.slowest[0].seconds >= 0.4
    assert report.files[0].file == "test_slow.py"
    assert report.files[0].tests == 2
    assert report.files_total == 4
    assert len(report.files) == 3  # the top 3 of 4

    # Shard balance: each run's two shards, and shard 1/2 carries the slow tests.
    assert [balance.run for balance in report.shards] == list(RUN_IDS)
    for balance in report.shards:
        assert [shard.shard for shard in balance.shards] == ["1/2", "2/2"]
        assert [shard.tests for shard in balance.shards] == [5, 3]
        assert balance.shards[0].seconds >= 0.55 > balance.shards[1].seconds
        assert balance.imbalance > 1.5

    # Failures and flakes: test_broken failed in ci-1 and ci-2, test_flaky needed its
    # rerun every time.
    assert [(run.run, run.failed, run.flaky, run.passed) for run in report.outcomes] == [
        ("ci-1", 1, 1, 6),
        ("ci-2", 1, 1, 6),
        ("ci-3", 0, 1, 7),
    ]
    unstable = {test.test_id: test for test in report.unstable}
    assert list(unstable) == ["test_unstable.py::test_flaky", "test_unstable.py::test_broken"]
    flaky, broken = unstable.values()
    assert (flaky.failed, flaky.flaky, flaky.runs, flaky.last_message) == (0, 3, 3, "")
    assert (broken.failed, broken.flaky, broken.runs) == (2, 0, 3)
    assert "<b>boom</b> & more" in broken.last_message
    assert broken.last_failed_run == "ci-2"
    # Flaky: test_flaky passed after reruns; test_broken failed until ci-3 (no commit
    # recorded: each CI run may be other code), fixed rather than flaky.
    assert [test.test_id for test in report.flaky] == ["test_unstable.py::test_flaky"]
    assert report.flaky_total == 1
    (flaky_test,) = report.flaky
    assert [seen.run_id for seen in flaky_test.passes] == ["ci-3", "ci-2", "ci-1"]
    assert {seen.reruns for seen in flaky_test.passes} == {1}


def test_only_the_most_recent_runs_are_covered(store: Path) -> None:
    report = build_report(stored_runs(store), max_runs=2)
    assert [run.name for run in report.runs] == ["ci-2", "ci-3"]
    assert [(test.test_id, test.failed) for test in report.unstable] == [
        ("test_unstable.py::test_flaky", 0),
        ("test_unstable.py::test_broken", 1),
    ]


def test_reports_without_a_run_id_or_shard_stand_alone() -> None:
    case = TestCase(file="t.py", classname="t", name="test_a", outcome="passed", duration=2.0)
    runs = [
        Run(id=f"r{index}", at=float(index), run_id="", source="x.xml", label="", cases=(case,))
        for index in range(2)
    ]
    ci_runs = group_ci_runs(runs)
    assert len(ci_runs) == 2
    assert all(run.name.endswith("UTC") for run in ci_runs)
    assert shard_of(runs[0]) == UNSHARDED
    assert [b.shards[0].seconds for b in shard_balance(ci_runs)] == [2.0, 2.0]


def test_the_shard_is_the_one_the_namespace_recorded() -> None:
    namespace = detect_namespace({}, ref="main", shard="10/12", run_id="81-1")
    run = Run(
        id="r",
        at=0.0,
        run_id="81-1",
        source="pytest",
        label=namespace.describe(),
        cases=(),
        shard=namespace.shard,
    )
    assert shard_of(run) == "10/12"
    shards = ("10/12", "2/12", "1/12")
    runs = [
        Run(
            id=f"r{n}",
            at=0.0,
            run_id="7",
            source="",
            label=f"local: a ref b shard {shard}, read-write",
            cases=(),
            shard=shard,
        )
        for n, shard in enumerate(shards)
    ]
    (balance,) = shard_balance(group_ci_runs(runs))
    assert [shard.shard for shard in balance.shards] == ["1/12", "2/12", "10/12"]


def test_the_shard_plot_keeps_to_the_most_recent_runs_it_can_draw() -> None:
    case = TestCase(file="t.py", classname="t", name="test_a", outcome="passed", duration=1.0)
    runs = [
        Run(
            id=f"{run}-{shard}",
            at=float(run),
            run_id=f"run{run}",
            source="pytest",
            label=f"local: a ref main shard {shard}/40 run run{run}, read-write",
            cases=(case,),
            shard=f"{shard}/40",
        )
        for run in range(5)
        for shard in range(1, 41 - 10 * (run == 4))
    ]
    report = build_report(runs)
    assert len(report.runs) == 5
    # 30 shards in the latest run, 40 in each before: 64 bars leave room for one run.
    assert [balance.run for balance in report.shards] == ["run4"]
    assert [len(balance.shards) for balance in report.shards] == [30]


# -- the page -------------------------------------------------------------------------


class PageParts(HTMLParser):
    """Every tag and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(text: str) -> PageParts:
    parts = PageParts()
    parts.feed(text)
    parts.close()
    return parts


def assert_loads_nothing(page: PageParts) -> None:
    assert not [tag for tag, _ in page.tags if tag in ("script", "img", "link", "iframe")]
    assert not [
        (tag, name)
        for tag, attrs in page.tags
        for name in attrs
        if name in ("src", "href", "xlink:href", "srcset", "action") or name.startswith("on")
    ]
    (policy,) = [a for _tag, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in (policy["content"] or "")


def test_the_command_writes_a_self_contained_page(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = cachekit(
        "stats", "report", "--url", str(store), *namespace_options(), "--html", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote {out}",
        "  3 CI run(s), 6 report(s), 8 test(s); latest run ci-3: 0 failed, 1 flaky",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.html"]  # no temp file
    text = out.read_text(encoding="utf-8")
    page = parse_page(text)
    assert_loads_nothing(page)
    plots = [attrs["data-plot"] for _tag, attrs in page.tags if "data-plot" in attrs]
    assert plots == ["slowest", "files", "shards", "history", "flaky"]
    # Store text is text: the test named like markup, the failure message with markup.
    assert "<script>" not in text
    assert "<b>boom" not in text
    assert f"test_escape.py::test_markup[{SCRIPT}]" in "".join(page.text)
    assert "<b>boom</b> & more" in "".join(page.text)


def test_writing_again_replaces_the_page(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old")
    result = cachekit(
        "stats",
        "report",
        "--url",
        str(store),
        *namespace_options(),
        "--html",
        str(out),
        "--top",
        "1",
        "--runs",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert '"runs": 1' in result.stdout
    page = parse_page(out.read_text(encoding="utf-8"))
    bars = [attrs for tag, attrs in page.tags if tag == "rect" and attrs.get("class") == "bar"]
    assert len(bars) == 1 + 1 + 2 + 1  # one slowest, one file, two shards, one flaky


def test_an_empty_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = cachekit("stats", "report", "--url", str(tmp_path / "empty"), "--html", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}\n  nothing recorded yet")
    page = parse_page(out.read_text(encoding="utf-8"))
    assert "Nothing recorded yet." in "".join(page.text)
    assert not [attrs for _tag, attrs in page.tags if "data-plot" in attrs]
    assert_loads_nothing(page)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--html", "missing-dir/report.html"], "the directory missing-dir does not exist"),
        (["--html", "."], "is a directory"),
        (["--html", "r.html", "--top", "0"], "--top and --runs must be at least 1"),
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path, arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cachekit("stats", "report", "--url", str(tmp_path / "store"), *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_every_text_from_the_store_is_escaped() -> None:
    hostile = '<img src=x onerror=alert(1)> "quoted" & <b>'
    case = TestCase(
        file=f"tests/{hostile}.py",
        classname="x",
        name=f"test_{SCRIPT}",
        outcome="failed",
        duration=1.5,
        message=hostile,
    )
    flaky = attrs.evolve(case, name="test_other", outcome="passed", reruns=2)
    run = Run(
        id="r1",
        at=1.0,
        run_id=f"run-{SCRIPT}",
        source=hostile,
        label=f"local: x ref {hostile} shard {SCRIPT}, read-write",
        cases=(case, flaky),
        shard=SCRIPT,
    )
    text = render_html(build_report([run], scope=hostile))
    page = parse_page(text)
    assert_loads_nothing(page)
    assert "<script" not in text
    assert "<img" not in text
    assert "& <b>" not in text
    shown = "".join(page.text)
    for expected in (hostile, SCRIPT, case.test_id):
        assert expected in shown


def test_records_written_like_stats_ingest_are_reported(tmp_path: Path) -> None:
    cases = tuple(
        TestCase(
            file=f"tests/test_{n % 3}.py",
            classname="c",
            name=f"test_{n}",
            outcome="passed",
            duration=float(n),
        )
        for n in range(1, 7)
    )
    namespace = the_namespace(shard="1/1", run_id="77")
    run = Run(
        id="r",
        at=5.0,
        run_id="77",
        source="report.xml",
        label=namespace.describe(),
        cases=cases,
        shard=namespace.shard,
    )
    record_runs(namespaced_cache(open_store(str(tmp_path)), namespace), [run])
    report = build_report(stored_runs(tmp_path), top=2)
    assert [item.test_id for item in report.slowest] == [
        "tests/test_0.py::test_6",
        "tests/test_2.py::test_5",
    ]
    assert [(f.file, f.seconds, f.tests) for f in report.files] == [
        ("tests/test_0.py", 9.0, 2),
        ("tests/test_2.py", 7.0, 2),
    ]
    assert [(s.shard, s.seconds) for s in report.shards[0].shards] == [("1/1", 21.0)]


# -- in a browser ---------------------------------------------------------------------


def missing(what: str, hint: str) -> NoReturn:
    """In CI a missing browser fails the test (a skip would hide a broken setup)."""
    message = f"{what} is needed for the browser test: {hint}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of headless Chromium (Debian's, never a downloaded one) with an empty
    profile."""
    if importlib.util.find_spec("playwright") is None:
        missing("Playwright for Python", INSTALL_PLAYWRIGHT)
    if not CHROMIUM.is_file():
        missing(f"Chromium at {CHROMIUM}", INSTALL_CHROMIUM)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    profile = tmp_path / "profile"
    profile.mkdir()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
            service_workers="block",
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.mark.slow
def test_the_page_renders_in_chromium_without_the_network(
    store: Path, tmp_path: Path, browser_page: Any
) -> None:
    out = tmp_path / "report.html"
    result = cachekit(
        "stats", "report", "--url", str(store), *namespace_options(), "--html", str(out)
    )
    assert result.returncode == 0, result.stderr
    page = browser_page
    url = out.as_uri()
    requests: list[str] = []
    refused: list[str] = []
    problems: list[str] = []

    def route(request_route: Any) -> None:
        if request_route.request.url == url:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    page.context.route("**/*", route)
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: problems.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")

    assert requests == [url]
    assert refused == []
    assert problems == []  # no errors, no refused loads (the page's policy would log them)
    assert page.evaluate("document.scripts.length") == 0
    assert page.locator("svg text", has_text=SCRIPT).count() == 1

    expected = {
        "slowest": ("rect.bar", 8),  # every test (none was skipped)
        "files": ("rect.bar", 4),
        "shards": ("rect.bar", 6),  # three runs of two shards
        "history": ("rect.bar", 5),  # failed and flaky in ci-1 and ci-2, flaky in ci-3
    }
    for plot, (selector, count) in expected.items():
        svg = page.locator(f'[data-plot="{plot}"] svg')
        assert svg.count() == 1, plot
        box = svg.bounding_box()
        assert box is not None
        assert box["width"] > 500
        assert box["height"] > 100
        sizes = svg.locator(selector).evaluate_all(
            "(bars) => bars.map((bar) => {"
            " const box = bar.getBoundingClientRect();"
            " return [box.width, box.height, bar.querySelector('title').textContent]; })"
        )
        assert len(sizes) == count, plot
        assert all(width > 0 and height > 0 and title for width, height, title in sizes), plot
    points = page.locator('[data-plot="history"] svg circle.point')
    assert points.count() == 3
    assert page.locator("#unstable-tests tbody tr").count() == 2
    flaky_rows = page.locator("#flaky-tests tbody tr")
    assert flaky_rows.count() == 1
    assert flaky_rows.first.get_attribute("data-test-id") == "test_unstable.py::test_flaky"
    assert flaky_rows.first.is_visible()

    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    width, height = page.evaluate("[document.body.scrollWidth, document.body.scrollHeight]")
    assert width <= 1100  # nothing overflows sideways
    assert height > 1500  # four plots and a table, not an error message


@pytest.mark.slow
def test_the_empty_page_renders_in_chromium(tmp_path: Path, browser_page: Any) -> None:
    out = tmp_path / "report.html"
    result = cachekit("stats", "report", "--url", str(tmp_path / "s"), "--html", str(out))
    assert result.returncode == 0, result.stderr
    browser_page.goto(out.as_uri())
    assert browser_page.locator("#nothing-recorded").is_visible()
    assert browser_page.locator("svg").count() == 0


def test_every_display_of_a_shard_counts_from_1(tmp_path: Path) -> None:
    """``--shard-id=0`` is the first shard: the pytest header, the split's line, the stored
    record, the report page and ``cachekit shard`` all call it ``1/2``."""
    project, store = tmp_path / "project", tmp_path / "store"
    project.mkdir()
    (project / "test_fast.py").write_text(SUITE["test_fast.py"])
    ids = [f"test_fast.py::test_{name}" for name in ("one", "two", "three")]
    options = ["--url", str(store), *namespace_options()]
    first = cachekit("shard", "1/2", "--json", *options, stdin="\n".join(ids))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["shard"] == "1/2"
    ran: dict[int, list[str]] = {}
    for shard_id in (0, 1):
        result = subprocess.run(
            [*PYTEST, "-vv", f"--cache-url={store}", "--num-shards=2", f"--shard-id={shard_id}"],
            cwd=project,
            env=clean_environment(
                CACHEKIT_REPOSITORY=NAMESPACE["repository"],
                CACHEKIT_REF=NAMESPACE["ref"],
                CACHEKIT_JOB=NAMESPACE["job"],
                CACHEKIT_RUN_ID="ci-9",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout
        shown = f"shard {shard_id + 1}/2"
        assert f"job test {shown} run ci-9, read-write)" in result.stdout  # the header
        assert f"cachekit: {shown} (--shard-id={shard_id}): " in result.stdout
        assert " of 2" not in result.stdout
        ran[shard_id] = sorted(re.findall(r"(test_fast\.py::\S+) PASSED", result.stdout))
    assert ran[0] == json.loads(first.stdout)["tests"]  # the same first shard
    report = build_report(stored_runs(store))
    (balance,) = report.shards
    assert [shard.shard for shard in balance.shards] == ["1/2", "2/2"]
    page = "".join(parse_page(render_html(report)).text)
    assert "shard 1/2" in page
    assert "Shards count from 1: 1/4 is the first of four (the plugin's --shard-id=0)." in page


def test_a_retried_ci_job_counts_once(tmp_path: Path) -> None:
    """GitLab retries a job under the same ``CI_PIPELINE_ID``: the shard's second attempt
    replaces its first in ``stats summary`` and the report, however often it is retried."""
    project, store = tmp_path / "project", tmp_path / "store"
    project.mkdir()
    (project / "test_fast.py").write_text(SUITE["test_fast.py"])
    (project / "test_once.py").write_text(
        "import os\ndef test_retried(): assert os.environ.get('ATTEMPT') == '2'\n"
    )
    env = clean_environment(
        GITLAB_CI="true",
        CI_PROJECT_PATH=NAMESPACE["repository"],
        CI_COMMIT_REF_NAME=NAMESPACE["ref"],
        CI_JOB_NAME=NAMESPACE["job"],
        CI_PIPELINE_ID="555",
        CI_NODE_INDEX="1",
        CI_NODE_TOTAL="2",
    )
    for attempt in ("1", "2"):
        result = subprocess.run(
            [*PYTEST, f"--cache-url={store}"],
            cwd=project,
            env={**env, "ATTEMPT": attempt},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == (1 if attempt == "1" else 0), result.stdout
    summary = cachekit("stats", "summary", "--url", str(store), *namespace_options(), "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert data["scope"] == "run 555"
    assert data["totals"]["tests"] == 4
    assert data["totals"]["failures"] == 0
    report = build_report(stored_runs(store))
    assert report.reports == 1
    assert [(o.passed, o.failed) for o in report.outcomes] == [(4, 0)]
    assert [(s.shard, s.tests) for s in report.shards[0].shards] == [("1/2", 4)]
