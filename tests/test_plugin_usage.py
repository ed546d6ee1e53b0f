"""Mistakes a new user makes with cachekit's options get one clear message that names the
fix, before anything is written; through real pytest runs."""

from __future__ import annotations

import pytest

from cachekit import InvalidURL, LocalStore, open_store

TESTS = "def test_ok():\n    pass\n"


def printed(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("value", "fix"),
    [("s3:/bucket/x", "s3://bucket/x"), ("memory:tests", "memory://tests"), ("gs:b", "gs://b")],
)
def test_a_url_with_a_malformed_scheme_is_a_usage_error(
    pytester: pytest.Pytester, value: str, fix: str
) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(f"--cache-url={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"did you mean {fix!r}" in printed(result)
    assert not (
        pytester.path / (value.split(":", maxsplit=1)[0] + ":")
    ).exists()  # no local directory


def test_paths_with_a_colon_and_file_urls_stay_paths(tmp_path: pytest.TempPathFactory) -> None:
    assert isinstance(open_store("./a:b"), LocalStore)
    assert isinstance(open_store("a:b"), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert isinstance(open_store(f"file:{tmp_path}"), LocalStore)
    with pytest.raises(InvalidURL, match="did you mean 'nosuch://x'"):
        open_store("nosuch:/x")


def test_a_separate_cache_url_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    store = pytester.mkdir("err")
    result = pytester.runpytest("--cache-url", "err")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "write --cache-url=err (with '=')" in printed(result)
    assert list(store.iterdir()) == []  # nothing written
    assert not (pytester.path / ".pytest_cache").exists()
    assert pytester.runpytest("--cache-url=err").ret == pytest.ExitCode.OK


@pytest.mark.parametrize("value", ["nosuchscheme://bucket/x", "hdfs://host/x"])
def test_an_url_that_cannot_be_opened_is_one_message(pytester: pytest.Pytester, value: str) -> None:
    """Through the sync agent: an error, exit code 4, and no warning besides."""
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(f"--cache-url={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = printed(result)
    assert "ERROR: cachekit: cannot open" in output
    assert "running as with an empty one" not in output
    assert "Warning" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-shards=abc"], "argument --num-shards: expected a whole number, got 'abc'"),
        (["--num-shards=2", "--shard-id=z"], "argument --shard-id: expected a whole number"),
        (["--cache-timeout=x"], "argument --cache-timeout: expected a number of seconds"),
        (
            ["-o", "cache_compact_threshold=ten"],
            "invalid cache_compact_threshold: expected a whole number, got 'ten'",
        ),
    ],
)
def test_option_errors_name_the_value(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in printed(result)
    assert "_positive_int" not in printed(result)


def test_the_budget_warning_names_the_budget_and_its_option(
    pytester: pytest.Pytester, hanging_endpoint: str
) -> None:
    pytester.makepyfile(TESTS)
    url = f"s3://bucket/x?endpoint_url={hanging_endpoint}"
    result = pytester.runpytest(f"--cache-url={url}", "--cache-timeout=1.5")
    assert result.ret == pytest.ExitCode.OK
    assert "no answer within the time budget (1.5 s, set by --cache-timeout)" in printed(result)


def test_missing_credentials_get_the_commands_hint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, s3_url: str, tmp_path: str
) -> None:
    from cachekit.session import CREDENTIALS_HINT  # noqa: PLC0415

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(pytester.path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(pytester.path / "none"))
    monkeypatch.setenv("CACHEKIT_IN_PROCESS", "1")
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(f"--cache-url={s3_url}", "--cache-timeout=20")
    assert result.ret == pytest.ExitCode.OK
    assert "StoreUnavailableWarning" in printed(result)
    assert CREDENTIALS_HINT in " ".join(printed(result).split())


@pytest.mark.parametrize("where", ["option", "ini"])
def test_a_warning_points_at_the_setting_not_at_cachekit(
    pytester: pytest.Pytester, where: str
) -> None:
    """pytest shows a warning's location: the user's setting, never cachekit's source, and
    never the ini file's line itself (it may hold credentials)."""
    pytester.makepyfile(TESTS)
    url = "s3://AKIAUSER:hunter2@bucket/x"
    if where == "ini":
        pytester.makeini(f"[pytest]\naddopts = -p no:randomly\ncache_url = {url}\n")
        result = pytester.runpytest("--cache-timeout=20")
        location = "tox.ini:3" if (pytester.path / "tox.ini").exists() else "ini:3"
    else:
        result = pytester.runpytest(f"--cache-url={url}", "--cache-timeout=20")
        location = "--cache-url:0"
    output = printed(result)
    assert result.ret == pytest.ExitCode.OK
    assert f"{location}: StoreUnavailableWarning: cachekit" in output
    assert "cachekit_pytest" not in output
    assert "warn(config, warning)" not in output
    assert "hunter2" not in output
