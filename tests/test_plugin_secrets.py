"""Credentials in a store URL never reach anything the plugin, its sync agent or the
``cachekit`` command print: warnings, the report header, ``--cache-show``, usage errors
and error lines. Each through a real run or a real command."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from servers import new_s3_bucket

SECRET = "hunter2secret"


def printed(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def with_userinfo_endpoint(s3_url: str) -> str:
    """``s3_url`` whose ``endpoint_url`` carries user info (``http://user:secret@host``)."""
    endpoint = s3_url.split("endpoint_url=", 1)[1].replace("%3A", ":").replace("%2F", "/")
    host = urlsplit(endpoint).netloc
    return s3_url.split("?", 1)[0] + f"?endpoint_url=http://someone:{SECRET}@{host}"


@pytest.mark.parametrize("in_process", ["0", "1"])
def test_user_info_in_the_bucket_is_never_printed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, in_process: str
) -> None:
    """s3fs quotes ``USER:SECRET@bucket`` as an invalid bucket name."""
    monkeypatch.setenv("CACHEKIT_IN_PROCESS", in_process)  # the agent, or this process
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest(
        f"--cache-url=s3://AKIAUSER:{SECRET}@bucket/x", "--cache-timeout=20"
    )
    assert result.ret == pytest.ExitCode.OK
    assert "StoreUnavailableWarning" in printed(result)
    assert SECRET not in printed(result)


def test_user_info_in_an_endpoint_is_never_printed(pytester: pytest.Pytester, s3_url: str) -> None:
    url = with_userinfo_endpoint(s3_url)
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest(f"--cache-url={url}", "--cache-timeout=20")
    assert result.ret == pytest.ExitCode.OK
    output = printed(result)
    assert "cachekit: s3://" in output  # the header names the store...
    assert "endpoint_url=http://***@127.0.0.1" in output  # ...without the user info
    assert SECRET not in output
    result = pytester.runpytest(f"--cache-url={url}", "--cache-show", "--cache-timeout=20")
    assert "cachekit: shared values" in printed(result) or "StoreUnavailable" in printed(result)
    assert SECRET not in printed(result)


def test_an_unknown_scheme_with_user_info_is_a_usage_error_without_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest(f"--cache-url=nosuchscheme://user:{SECRET}@host/x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "nosuchscheme://***@host/x" in printed(result)
    assert SECRET not in printed(result)


def test_skip_passed_never_prints_the_secret(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    monkeypatch.setenv("CACHEKIT_SIGNING_KEY", "k" * 32)
    pytester.makepyfile("def test_ok(): pass")
    bucket = urlsplit(new_s3_bucket(s3_endpoint)).netloc
    host = urlsplit(s3_endpoint).netloc
    url = f"s3://{bucket}/x?endpoint_url=http://someone:{SECRET}@{host}"
    result = pytester.runpytest(f"--cache-url={url}", "--skip-passed", "--cache-timeout=20")
    assert result.ret == pytest.ExitCode.OK
    assert SECRET not in printed(result)
    result = pytester.runpytest(f"--cache-url=nosuchscheme://user:{SECRET}@host/x", "--skip-passed")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert SECRET not in printed(result)


@pytest.mark.parametrize("command", [["show"], ["pull"], ["compact"]])
def test_the_command_never_prints_the_secret(
    s3_url: str, tmp_path: os.PathLike[str], command: list[str]
) -> None:
    for url in (with_userinfo_endpoint(s3_url), f"s3://AKIAUSER:{SECRET}@bucket/x"):
        result = subprocess.run(
            [sys.executable, "-m", "cachekit", *command, "--url", url],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert result.returncode != 0
        assert "cachekit: error:" in result.stderr
        assert SECRET not in result.stdout + result.stderr
