"""The sync agent: a remote store's libraries stay out of pytest, its start-up read runs
alongside the session, and the result is the same as reading first, byte for byte."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from cachekit import LASTFAILED, NODEIDS
from cachekit.ci.namespace import Namespace
from cachekit.session import Session
from cachekit.values.digests import DigestSet
from cachekit.values.merge import still_failing
from cachekit_pytest.sync.agent import (
    AgentSync,
    RaisedWarning,
    Reply,
    Request,
    Start,
    decode,
    encode,
)
from cachekit_pytest.sync.keys import Found, SharedKey
from cachekit_pytest.sync.records import Write
from plugin_support import shared
from servers import new_s3_bucket

CONTROLLED = """
import os, pytest

FAIL = set(filter(None, os.environ.get("CK_FAIL", "").split(",")))

@pytest.mark.parametrize("n", range(6))
def test_t(n):
    assert f"t{n}" not in FAIL
"""


def merged_state(url: str) -> tuple[dict[str, bool], DigestSet]:
    cache = shared(url)
    lastfailed = still_failing(cache.read_merged("cache/lastfailed", LASTFAILED).value)
    nodeids: DigestSet = cache.read_merged("cache/nodeids", NODEIDS).value
    return lastfailed, nodeids


def working_copy(pytester: pytest.Pytester, cache_dir: str) -> dict[str, bytes]:
    values = pytester.path / cache_dir / "v"
    return {
        str(path.relative_to(values)): path.read_bytes()
        for path in sorted(values.rglob("*"))
        if path.is_file()
    }


#: (what fails, the broken file's source, extra options, a new machine?) per run
RUNS = [
    ("t1,t4", "import not_a_module_xyz", (), False),
    ("t4", "import not_a_module_xyz", ("-k", "not t[0]"), False),
    ("t2", "def test_fixed(): pass", (), True),
    ("", "def test_fixed(): pass", ("-k", "t2 or fixed"), False),
    ("t0", "def test_fixed(): pass", (), True),
]


def test_reading_alongside_ends_as_reading_first(
    pytester: pytest.Pytester, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's read runs alongside the session and is folded into LFPlugin's and
    NFPlugin's state at the end; the in-process path reads before they start. Every
    run leaves the same working copy and the same merged values either way, through
    failures moving, deselection, a collection error fixed, and new machines."""
    alongside, first = new_s3_bucket(s3_endpoint), new_s3_bucket(s3_endpoint)
    pytester.makepyfile(test_ctl=CONTROLLED)
    for index, (failing, broken, options, new_machine) in enumerate(RUNS):
        pytester.makepyfile(test_broken=broken)
        monkeypatch.setenv("CK_FAIL", failing)
        outcomes = []
        for url, cache_dir, in_process in ((alongside, "a", ""), (first, "b", "1")):
            if new_machine:
                shutil.rmtree(pytester.path / cache_dir, ignore_errors=True)
            monkeypatch.setenv("CACHEKIT_IN_PROCESS", in_process)
            result = pytester.runpytest(
                f"--cache-url={url}", "-o", f"cache_dir={cache_dir}", *options
            )
            outcomes.append(result.parseoutcomes())
        assert outcomes[0] == outcomes[1], index
        assert working_copy(pytester, "a") == working_copy(pytester, "b"), index
        assert merged_state(alongside) == merged_state(first), index
    lastfailed, _ = merged_state(alongside)
    assert lastfailed == {"test_ctl.py::test_t[0]": True}


def test_backend_libraries_stay_out_of_the_pytest_process(
    pytester: pytest.Pytester, s3_url: str
) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_no_botocore_here():
            assert not {"botocore", "s3fs", "aiobotocore"} & set(sys.modules)
        """
    )
    result = pytester.runpytest_subprocess(f"--cache-url={s3_url}")
    result.assert_outcomes(passed=1)
    assert "Warning" not in result.stdout.str()
    known = merged_state(s3_url)[1]
    assert len(known) == 1
    test_id = "test_backend_libraries_stay_out_of_the_pytest_process.py::test_no_botocore_here"
    assert test_id in known


def test_conftest_and_fixture_reads_wait_for_the_shared_values(
    pytester: pytest.Pytester, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_ctl=CONTROLLED)
    monkeypatch.setenv("CK_FAIL", "t3")
    pytester.runpytest(f"--cache-url={s3_url}")
    pytester.makepyfile(
        test_reader="""
        def test_reads(cache):
            assert cache.get("cache/lastfailed", None) == {"test_ctl.py::test_t[3]": True}
        """
    )
    (pytester.path / ".pytest_cache").rename(pytester.path / "elsewhere")  # a new machine
    result = pytester.runpytest(f"--cache-url={s3_url}", "test_reader.py")
    result.assert_outcomes(passed=1)


def test_invalid_remote_url_is_a_usage_error_before_any_test_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_a(): print('RAN')")
    result = pytester.runpytest("-s", "--cache-url=nosuchproto://bucket/prefix")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cachekit: *'nosuchproto' is not a known fsspec protocol*"])
    assert "RAN" not in result.stdout.str()


#: A ``sitecustomize`` that holds the sync agent (the one ``python -c`` process of a
#: run) at its start until the file ``$AGENT_GO`` exists, for at most 20 s, then writes
#: what it saw to ``$AGENT_GO.seen``: a test that creates the file ran while the agent
#: had not yet opened the store.
HOLD_THE_AGENT = """
import os, sys, time

go = os.environ.get("AGENT_GO")
if go and sys.argv[:1] == ["-c"]:
    deadline = time.monotonic() + 20
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(go + ".seen", "w") as seen:
        seen.write("go" if os.path.exists(go) else "timeout")
"""

RELEASE_THE_AGENT = """
import os

def test_release():
    open(os.environ["AGENT_GO"], "w").close()
"""


def hold_the_agent(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file that releases the agent of the next run (`HOLD_THE_AGENT`)."""
    site = pytester.mkdir("site")
    (site / "sitecustomize.py").write_text(HOLD_THE_AGENT, encoding="utf-8")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    )
    go = pytester.path / "agent-go"
    monkeypatch.setenv("AGENT_GO", str(go))
    return go


def test_the_tests_do_not_wait_for_the_agent_to_import_the_client_library(
    pytester: pytest.Pytester, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's client library is installed, checked without importing it: the tests
    start while the agent is still starting, and the run reads and writes as always."""
    pytester.makepyfile(test_ctl=CONTROLLED, test_release=RELEASE_THE_AGENT)
    go = hold_the_agent(pytester, monkeypatch)
    monkeypatch.setenv("CK_FAIL", "t2")
    result = pytester.runpytest_subprocess(f"--cache-url={s3_url}", "-p", "no:randomly")
    result.assert_outcomes(passed=6, failed=1)
    assert (go.parent / "agent-go.seen").read_text(encoding="utf-8") == "go"
    assert "Warning" not in result.stdout.str()
    assert merged_state(s3_url)[0] == {"test_ctl.py::test_t[2]": True}


def test_a_missing_client_library_is_a_usage_error_before_collection(
    pytester: pytest.Pytester, s3_url: str
) -> None:
    pytester.makeconftest("import sys\nsys.modules['s3fs'] = None  # as if not installed\n")
    pytester.makepyfile("print('COLLECTED')\ndef test_a(): pass")
    result = pytester.runpytest_subprocess("-s", f"--cache-url={s3_url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*cachekit: cannot open s3://*pip install 'pytest-cachekit[[]s3[]]'*"]
    )
    assert "COLLECTED" not in result.stdout.str()


#: Waits, at most 30 s, for the sync agent's answer to opening the store, in the process
#: that started the agent (looking at its reply queue: no other sign of it is there).
AWAIT_THE_AGENT = """
import time

def await_the_agent(config):
    sync = config.pluginmanager.get_plugin("cacheprovider").run.sync
    deadline = time.monotonic() + 30
    while sync._replies.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
"""

#: The first test waits for the agent's answer, so it is in before the second.
WAIT_FOR_THE_AGENT = (
    AWAIT_THE_AGENT
    + """
def test_first(request):
    await_the_agent(request.config)

def test_second():
    print("SECOND RAN")
"""
)


def test_a_url_the_library_refuses_is_a_usage_error_before_the_next_test(
    pytester: pytest.Pytester, s3_url: str
) -> None:
    """The library is installed but refuses an option once the agent opens the store:
    the tests did not wait for that, so it stops the run before the next test."""
    pytester.makepyfile(test_agent=WAIT_FOR_THE_AGENT)
    url = f"{s3_url}&max_concurrency=abc"
    result = pytester.runpytest_subprocess("-s", "-p", "no:randomly", f"--cache-url={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cachekit: cannot open s3://*max_concurrency=abc*"])
    assert "SECOND RAN" not in result.stdout.str()
    assert "Warning" not in result.stdout.str() + result.stderr.str()


#: Under xdist the tests run on the workers and the agent answers the controller: the
#: controller's conftest holds its second test report until that answer is in, so the
#: refusal is there when the controller hears of the next test.
HOLD_THE_CONTROLLER = (
    AWAIT_THE_AGENT
    + """
import pytest

configs, started = [], []

def pytest_configure(config):
    configs.append(config)

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid):
    started.append(nodeid)
    if not hasattr(configs[0], "workerinput") and len(started) == 2:
        await_the_agent(configs[0])
"""
)


def test_a_url_refused_under_xdist_stops_the_run_from_the_controller(
    pytester: pytest.Pytester, s3_url: str
) -> None:
    """With ``-n 2`` the controller (which never runs a test) hears each test start
    from the workers: the refusal stops the run there, with the usage error, and the
    workers with it."""
    pytester.makeconftest(HOLD_THE_CONTROLLER)
    pytester.makepyfile(
        "import pytest, time\n"
        "@pytest.mark.parametrize('n', range(40))\n"
        "def test_slowly(n):\n"
        "    time.sleep(0.05)\n"
    )
    url = f"{s3_url}&max_concurrency=abc"
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", f"--cache-url={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cachekit: cannot open s3://*max_concurrency=abc*"])
    assert "40 passed" not in result.stdout.str()
    assert "Warning" not in result.stdout.str() + result.stderr.str()


def test_a_url_refused_after_the_last_test_is_one_warning(
    pytester: pytest.Pytester, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests finished before the agent found the URL unusable: the run's outcome
    stands, with one warning, and nothing is written."""
    pytester.makepyfile(test_release=RELEASE_THE_AGENT)
    go = hold_the_agent(pytester, monkeypatch)
    url = f"{s3_url}&max_concurrency=abc"
    result = pytester.runpytest_subprocess(f"--cache-url={url}")
    assert result.ret == pytest.ExitCode.OK
    assert (go.parent / "agent-go.seen").read_text(encoding="utf-8") == "go"
    output = result.stdout.str()
    assert output.count("Warning: cachekit: could not read the shared cache") == 1, output
    assert "cannot open s3://" in output
    assert shared(s3_url).store.list() == []


KILL_THE_AGENT = """
import os, signal
from pathlib import Path

def test_kill_the_agent():
    killed = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"cachekit_pytest.sync.agent" in command:
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(entry.name)
    assert killed
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the agent in /proc")
def test_agent_killed_mid_run_is_one_warning_and_writes_nothing(
    pytester: pytest.Pytester, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_ctl=CONTROLLED)
    monkeypatch.setenv("CK_FAIL", "t5")
    pytester.runpytest(f"--cache-url={s3_url}")
    before = sorted(shared(s3_url).store.list())
    pytester.makepyfile(test_kill=KILL_THE_AGENT)
    result = pytester.runpytest(f"--cache-url={s3_url}", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # t5 fails, as without a cache
    result.assert_outcomes(passed=6, failed=1)
    output = result.stdout.str()
    assert output.count("StoreUnavailableWarning: cachekit") == 1, output
    assert "the sync agent exited unexpectedly" in output
    assert sorted(shared(s3_url).store.list()) == before


DELETE_THE_BUCKET = """
import os, s3fs

def test_delete_the_bucket():
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["CK_ENDPOINT"], skip_instance_cache=True)
    fs.rm(os.environ["CK_BUCKET"], recursive=True)
"""


def test_a_failed_write_is_one_warning_in_the_summary(
    pytester: pytest.Pytester, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent writes while pytest reports the run; when that write fails, the warning
    is still part of the warnings summary, and the outcome is the tests' own."""
    url = new_s3_bucket(s3_endpoint)
    monkeypatch.setenv("CK_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("CK_BUCKET", url.removeprefix("s3://").split("/", 1)[0])
    monkeypatch.setenv("CK_FAIL", "t2")
    pytester.makepyfile(test_ctl=CONTROLLED, test_zz_delete=DELETE_THE_BUCKET)
    # --ff: the start-up read finishes before the tests run. Without it the read runs
    # alongside them, and on a loaded machine the bucket may be gone before it ends.
    result = pytester.runpytest(f"--cache-url={url}", "-p", "no:randomly", "--ff")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=6, failed=1)
    output = result.stdout.str()
    assert output.count("StoreUnavailableWarning: cachekit") == 1, output
    summary = output.index("warnings summary")
    assert (
        summary
        < output.index("could not write this run's results")
        < output.rindex("1 failed, 6 passed")
    )


def test_every_message_survives_the_pipe() -> None:
    """Every record the two sides exchange survives the JSON round trip unchanged."""
    requests = [
        Request(
            start=Start(
                "s3://b/p", Namespace(ref="main", shard="1/2"), (SharedKey("a/b", "union"),), True
            )
        ),
        Request(
            write=Write(
                {"cache/lastfailed": {"x": {"at": 1.5, "failed": True}}}, ("cache/nodeids",), 10
            )
        ),
        Request(close=True),
    ]
    for request in requests:
        assert decode(encode(request), Request) == request
    reply = Reply(
        ok=True,
        found={"cache/nodeids": Found(["a", "b"], True, ("p1",))},
        warnings=(RaisedWarning("CorruptValueWarning", "bad"),),
    )
    assert decode(encode(reply), Reply) == reply


def test_a_closed_agent_leaves_no_pipe_open(tmp_path: Path) -> None:
    """The run closes the agent's pipes, not the garbage collector: an unclosed one is a
    ResourceWarning wherever it is collected, which ``filterwarnings = error`` turns into
    an error of whatever test runs then (in-process pytest runs collect one another's)."""
    session = Session(str(tmp_path / "store"), namespace=Namespace())
    sync = AgentSync(session, ())
    sync.start(read=True)
    assert sync.result() is not None
    sync.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        del sync
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
