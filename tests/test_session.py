"""`cachekit.session.Session`: the seam every tool uses. Real stores: a local directory,
moto's S3 server, and a server on loopback that accepts connections and never answers."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from cachekit import (
    LASTFAILED,
    CorruptValueWarning,
    LocalStore,
    SortedUnion,
    StoreUnavailableWarning,
)
from cachekit.ci import detect_namespace
from cachekit.session import Session
from cachekit.values.merge import observe_outcomes, still_failing

MAIN = detect_namespace({}, repository="acme/app", ref="main", job="test")
FEATURE = detect_namespace(
    {}, repository="acme/app", ref="feature/x", base_ref="main", job="test", shard="1/2"
)
FORK = detect_namespace(
    {}, repository="acme/app", ref="pr-9", base_ref="main", job="test", trusted=False
)

#: A join of lists of strings, for tests of parts and reads.
UNION = SortedUnion()


def session(url: str, namespace: object = MAIN, **options: object) -> tuple[Session, list[Warning]]:
    warned: list[Warning] = []
    made = Session(url, namespace=namespace, warn=warned.append, **options)  # type: ignore[arg-type]
    return made, warned


def test_a_branch_reads_what_its_base_wrote_and_writes_only_its_own(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    main, _ = session(url)
    main.write_parts(main.namespace.new_part_id(), {"cache/nodeids": ["t::a", "t::b"]})
    feature, _ = session(url, FEATURE)
    feature.write_parts(feature.namespace.new_part_id(), {"cache/nodeids": ["t::c"]})

    layers = feature.read_layers("cache/nodeids", UNION)
    assert [layer.value for layer in layers] == [["t::c"], ["t::a", "t::b"]]  # nearest first
    assert feature.read_joined("cache/nodeids", UNION) == ["t::a", "t::b", "t::c"]
    assert main.read_joined("cache/nodeids", UNION) == ["t::a", "t::b"]


def test_write_parts_compacts_once_the_threshold_is_reached(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    for number in range(3):
        run, _ = session(url)
        failed = {"t::flaky"} if number % 2 == 0 else set()
        part = observe_outcomes(
            failed=failed, passed={"t::ok"} | ({"t::flaky"} - failed), at=number
        )
        run.write_parts(
            run.namespace.new_part_id(), {"cache/lastfailed": part},
            compact={"cache/lastfailed": LASTFAILED}, min_parts=3,
        )  # fmt: skip
    reader, _ = session(url)
    (layer,) = reader.read_layers("cache/lastfailed", LASTFAILED)
    assert layer.has_base
    assert layer.parts == ()  # three parts folded into the base
    assert still_failing(layer.value) == {"t::flaky": True}


def test_an_untrusted_run_reads_but_never_writes(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    main, _ = session(url)
    main.write_parts(main.namespace.new_part_id(), {"cache/nodeids": ["t::a"]})
    fork, warned = session(url, FORK)
    assert fork.read_joined("cache/nodeids", UNION) == ["t::a"]
    assert fork.attempt(lambda: fork.write_parts("p", {"cache/nodeids": ["t::evil"]}), "x") is None
    assert fork.degraded
    assert main.read_joined("cache/nodeids", UNION) == ["t::a"]
    assert [type(w) for w in warned] == [StoreUnavailableWarning]


def test_a_hanging_store_costs_the_budget_once_and_warns_once(hanging_endpoint: str) -> None:
    query = urlencode({"endpoint_url": hanging_endpoint})
    hanging, warned = session(f"s3://ck-bucket/cache?{query}", timeout=1.0)
    started = time.monotonic()
    first = hanging.attempt(lambda: hanging.read_joined("cache/nodeids", UNION), "reading")
    second = hanging.attempt(lambda: hanging.read_joined("cache/nodeids", UNION), "reading")
    elapsed = time.monotonic() - started
    assert first is None
    assert second is None
    assert elapsed < 3.0  # one budget of 1 s, the second call never reaches the store
    assert len(warned) == 1
    assert isinstance(warned[0], StoreUnavailableWarning)
    assert "time budget" in str(warned[0])


def test_errors_quoting_the_url_never_show_its_credentials(s3_endpoint: str) -> None:
    """s3fs reads ``USER:SECRET@bucket`` as a bucket name and quotes it in its error."""
    query = urlencode({"endpoint_url": s3_endpoint})
    broken, warned = session(f"s3://AKIAUSER:hunter2secret@ck-bucket/x?{query}")
    assert broken.attempt(lambda: broken.read_joined("cache/nodeids", UNION), "reading") is None
    assert len(warned) == 1
    assert "hunter2secret" not in str(warned[0])
    assert "hunter2secret" not in broken.describe()


def test_corrupt_values_make_one_warning_and_read_as_missing(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    main, warned = session(url)
    main.write_parts("good", {"cache/nodeids": ["t::a"]})
    raw = LocalStore(url)
    prefix = MAIN.prefix
    raw.put(f"{prefix}/cache/nodeids/@parts/planted-1", b"not a cachekit value")
    raw.put(f"{prefix}/cache/nodeids/@parts/planted-2", b"\x00\x01 neither")
    for _ in range(2):
        value = main.attempt(lambda: main.read_joined("cache/nodeids", UNION), "reading")
        assert value == ["t::a"]
    assert [type(w) for w in warned] == [CorruptValueWarning]
    assert "2 unreadable" in str(warned[0])
    assert not main.degraded


def test_the_store_opens_only_when_used(tmp_path: Path) -> None:
    """Opening imports a cloud client: a run that never reads must not pay for it."""
    unopened, _ = session("nosuchscheme://bucket/x")
    assert "nosuchscheme://bucket/x" in unopened.describe()
    with pytest.raises(Exception, match="nosuchscheme"):
        _ = unopened.store
