"""The pytest plugin with the default backend: exactly pytest's own cache provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _pytest.cacheprovider import Cache, LFPlugin, NFPlugin

from cachekit_pytest.plugin import PLUGIN_NAME
from cachekit_pytest.provider import CacheProvider

TESTS = """
import pytest

def test_pass():
    pass

def test_fail():
    assert 0

@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    assert x == 1

def test_skip():
    pytest.skip("no")
"""


@pytest.fixture(autouse=True)
def _no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CACHEKIT_URL", "CACHEKIT_SHARD", "CACHEKIT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes; stepwise's timestamp blanked."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            value = json.loads(data) if path.name == "stepwise" else None
            if isinstance(value, dict):  # pytest >= 8.4 stamps it with a date
                value["last_cache_date_str"] = "<date>"
                data = json.dumps(value).encode()
            found[str(path.relative_to(root))] = data
    return found


SEQUENCE = [
    [],
    ["--lf"],
    ["--cache-clear"],
    ["--ff"],
    ["--nf"],
    ["--sw"],
    ["--sw"],
    ["--sw-skip"],
    ["--lf", "--lfnf", "none"],
    ["--lf", "-k", "param"],
    ["--collect-only"],
]


def run_sequence(pytester: pytest.Pytester, extra: list[str]) -> tuple[list[str], dict[str, bytes]]:
    pytester.makepyfile(test_one=TESTS)
    pytester.makepyfile(
        test_two="""
        def test_cache(cache):
            cache.set("mine/value", {"n": [1, 2]})
            assert cache.get("mine/value", None) == {"n": [1, 2]}
            assert cache.mkdir("mydir").is_dir()
        """
    )
    outcomes = []
    for args in SEQUENCE:
        result = pytester.runpytest(*extra, *args)
        outcomes.append(f"{args}: {result.ret} {result.parseoutcomes()}")
    return outcomes, tree(pytester.path / ".pytest_cache")


def test_same_outcomes_and_bytes_as_pytest(pytester: pytest.Pytester) -> None:
    """With the default backend the cache directory is byte for byte pytest's own."""
    (pytester.path / "a").mkdir()
    (pytester.path / "b").mkdir()
    pytester.chdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pytester.path / "a")
        pytester._path = pytester.path / "a"  # one pytester, two projects
        ours = run_sequence(pytester, [])
        pytester._path = pytester.path.parent / "b"
        mp.chdir(pytester.path)
        theirs = run_sequence(pytester, ["-p", "no:cachekit"])
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert "v/cache/lastfailed" in ours[1]
    assert "v/cache/stepwise" in ours[1]
    assert "v/mine/value" in ours[1]


def test_takes_over_the_cacheprovider_name(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    provider = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(provider, CacheProvider)
    assert isinstance(config.pluginmanager.get_plugin("lfplugin"), LFPlugin)
    assert isinstance(config.pluginmanager.get_plugin("nfplugin"), NFPlugin)
    assert type(config.cache) is Cache
    assert config.cache._cachedir == pytester.path / ".pytest_cache"
    # the built-in module is no longer registered under any name
    assert not any(
        getattr(plugin, "__name__", "") == "_pytest.cacheprovider"
        for plugin in config.pluginmanager.get_plugins()
    )


def test_plugin_names_other_plugins_look_up(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=TESTS)
    pytester.runpytest()
    pytester.makeconftest(
        """
        import pytest
        from _pytest.cacheprovider import Cache, LFPlugin, NFPlugin

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(config, items):
            pm = config.pluginmanager
            assert isinstance(pm.get_plugin("lfplugin"), LFPlugin)
            assert isinstance(pm.get_plugin("nfplugin"), NFPlugin)
            assert pm.get_plugin("lfplugin-collwrapper") is not None
            assert pm.get_plugin("lfplugin-collskip") is not None
            assert type(config.cache) is Cache
            assert config.cache._cachedir == config.rootpath / ".pytest_cache"
            print("NAMES-OK")
        """
    )
    pytester.makepyfile(test_zzz="def test_new(): pass")
    result = pytester.runpytest("--lf", "-s")
    result.stdout.fnmatch_lines(["*NAMES-OK*", "*run-last-failure: rerun previous 2 failures*"])


def test_disabling_cacheprovider_keeps_its_meaning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 1
    assert not (pytester.path / ".pytest_cache").exists()
    result = pytester.runpytest("-p", "no:cacheprovider", "--lf")
    result.stderr.fnmatch_lines(["*unrecognized arguments: --lf*"])
    config = pytester.parseconfigure("-p", "no:cacheprovider")
    assert config.pluginmanager.get_plugin(PLUGIN_NAME) is None
    assert not hasattr(config, "cache") or config.cache is None


def test_disabling_cachekit_restores_pytests_provider(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("-p", "no:cachekit")
    provider = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert provider is not None
    assert not isinstance(provider, CacheProvider)
    assert provider.__name__ == "_pytest.cacheprovider"


def test_cache_dir_ini_and_header(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncache_dir = custom/cache\n")
    pytester.makepyfile(test_one="def test_a(): assert 0")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["cachedir: custom/cache"])
    result.stdout.no_fnmatch_line("cachekit:*")
    assert (pytester.path / "custom/cache/v/cache/lastfailed").is_file()
    assert not (pytester.path / ".pytest_cache").exists()


def test_cache_show_and_clear(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="""
        def test_a(cache):
            cache.set("my/key", [1, 2])
            cache.mkdir("dir").joinpath("f").write_text("xyz")
            assert 0
        """
    )
    pytester.runpytest()
    result = pytester.runpytest("--cache-show")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "cachedir: *",
            "*cache values for '[*]'*",
            "cache/lastfailed contains:",
            "  {'test_one.py::test_a': True}",
            "my/key contains:",
            "  [[]1, 2[]]",
            "*cache directories for '[*]'*",
            "d/dir/f is a file of length 3",
        ]
    )
    result = pytester.runpytest("--cache-show", "my/*")
    result.stdout.fnmatch_lines(["my/key contains:"])
    result.stdout.no_fnmatch_line("cache/lastfailed contains:")
    pytester.runpytest("--cache-clear", "--collect-only")
    assert not (pytester.path / ".pytest_cache/v/my").exists()
    assert not (pytester.path / ".pytest_cache/d").exists()


def test_cache_show_empty(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cache-show")
    result.stdout.fnmatch_lines(["cache is empty"])
    assert result.ret == 0


def test_config_cache_api(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_configure(config):
            config.cache.set("conf/value", 42)
            assert config.cache.get("conf/value", None) == 42
            assert config.cache.mkdir("confdir").is_dir()
            assert config.cache.mkdir("confdir").parent.parent == config.cache._cachedir
        """
    )
    pytester.makepyfile(test_one="def test_a(): pass")
    assert pytester.runpytest().ret == 0
    assert json.loads((pytester.path / ".pytest_cache/v/conf/value").read_text()) == 42


def test_options_are_grouped_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "cachekit (share the cache between runs and CI shards):",
            "  --cache-url=URL*",
            "*",
            "  --cache-shard=NAME*",
            "*",
            "  --cache-timeout=SECONDS*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*cache_url (string):*", "*cache_timeout*", "*cache_shared_keys (linelist):*"]
    )


def test_lf_ff_nf_local(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=TESTS)
    pytester.runpytest()
    result = pytester.runpytest("--lf", "-v")
    result.assert_outcomes(failed=2)
    result = pytester.runpytest("--ff", "-v")
    result.stdout.fnmatch_lines(["*test_fail FAILED*", "*test_param?2? FAILED*", "*test_pass*"])
    pytester.makepyfile(test_new="def test_new(): pass")
    result = pytester.runpytest("--nf", "-v")
    result.stdout.fnmatch_lines(["*test_new.py::test_new PASSED*", "*test_one.py*"])


def test_empty_backend_option_keeps_the_cache_local(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CACHEKIT_URL", str(tmp_path / "remote"))
    pytester.makepyfile(test_one="def test_a(): assert 0")
    result = pytester.runpytest("--cache-url=")
    result.stdout.no_fnmatch_line("cachekit:*")
    assert not (tmp_path / "remote").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache-timeout", "-1"], "*--cache-timeout*"),
        (["-o", "cache_timeout=soon", "--cache-url=x"], "*invalid cache_timeout*"),
        (["-o", "cache_compact_threshold=0", "--cache-url=x"], "*cache_compact_threshold*"),
    ],
)
def test_invalid_settings_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_invalid_shared_keys(pytester: pytest.Pytester, tmp_path: Path) -> None:
    for line, message in [
        ("../x", "*cache_shared_keys*'../x'*"),
        ("a/@b", "*cache_shared_keys*"),
        ("a/b = sometimes", "*unknown strategy*"),
        ("cache/stepwise", "*per machine*"),
    ]:
        pytester.makeini(f"[pytest]\ncache_shared_keys =\n    {line}\n")
        result = pytester.runpytest(f"--cache-url={tmp_path / 'remote'}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, line
        result.stderr.fnmatch_lines([message])


LOGGERS = """
import json, logging, pathlib

def test_record_loggers():
    names = sorted(logging.root.manager.loggerDict)
    pathlib.Path("loggers.json").write_text(json.dumps(names))
"""


def test_the_plugin_adds_no_logger(pytester: pytest.Pytester) -> None:
    """pytest's log capture walks every logger on each phase of every test (``setLevel``
    clears each one's cache): a logger the plugin brought would slow every run."""
    pytester.makepyfile(LOGGERS)
    seen = []
    for disable in (("-p", "no:cachekit"), ()):
        pytester.runpytest_subprocess(*disable).assert_outcomes(passed=1)
        seen.append(json.loads((pytester.path / "loggers.json").read_text()))
    without, with_plugin = seen
    assert with_plugin == without
