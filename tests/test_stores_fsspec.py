"""`FsspecStore`: the conformance suite on fsspec's memory filesystem and on real loopback
servers (moto for S3, Azurite for Azure Blob, gcp-storage-emulator for GCS), plus what is
particular to this backend: URL options, missing extras, dead endpoints, redaction."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from cachekit import (
    CacheStore,
    InvalidURL,
    PreconditionFailed,
    StoreUnavailable,
    UnsupportedOperation,
    open_store,
)
from cachekit.stores.fsspec import FsspecStore
from cachekit.testing import StoreTests
from servers import CLOSED_PORT, LOOPBACK


@pytest.fixture
def memory_fs_store() -> Iterator[FsspecStore]:
    """A store on fsspec's (process-global) memory filesystem, under a fresh root."""
    fs = MemoryFileSystem()
    root = f"/cachekit-{uuid.uuid4().hex}"
    store = FsspecStore(fs, root)
    yield store
    store.close()
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def opened(request: pytest.FixtureRequest) -> Iterator[FsspecStore]:
    """The store that the URL fixture named by the test's parameter opens."""
    store = open_store(request.getfixturevalue(request.param))
    assert isinstance(store, FsspecStore)
    yield store
    store.close()


class TestMemoryFilesystem(StoreTests):
    """Any fsspec filesystem without a conditional-write backend: no preconditions."""

    @pytest.fixture
    def store(self, memory_fs_store: FsspecStore) -> CacheStore:
        return memory_fs_store


class TestS3(StoreTests):
    @pytest.fixture
    def store(self, s3_url: str) -> Iterator[CacheStore]:
        store = open_store(s3_url)
        yield store
        store.close()


class TestAzure(StoreTests):
    @pytest.fixture
    def store(self, azure_url: str) -> Iterator[CacheStore]:
        store = open_store(azure_url)
        yield store
        store.close()


class TestGcs(StoreTests):
    #: gcp-storage-emulator accepts ifGenerationMatch and ignores it (checked below).
    server_honours_preconditions = False

    @pytest.fixture
    def store(self, gcs_url: str) -> Iterator[CacheStore]:
        store = open_store(gcs_url)
        yield store
        store.close()


CLOUD_URLS = ["s3_url", "azure_url", "gcs_url"]
HONOURING_URLS = ["s3_url", "azure_url"]


# -- conditional writes, as each server actually answers ---------------------------------


@pytest.mark.parametrize("opened", HONOURING_URLS, indirect=True)
def test_conditional_writes_are_enforced_by_the_server(opened: FsspecStore) -> None:
    assert opened.capabilities.create_only
    assert opened.capabilities.compare_and_swap
    first = opened.put("k", b"one", if_absent=True)
    with pytest.raises(PreconditionFailed):
        opened.put("k", b"two", if_absent=True)
    second = opened.put("k", b"two", if_version=first)
    with pytest.raises(PreconditionFailed):
        opened.put("k", b"three", if_version=first)
    with pytest.raises(PreconditionFailed):
        opened.put("absent", b"x", if_version=second)
    entry = opened.get("k")
    assert entry is not None
    assert (entry.data, entry.version) == (b"two", second)


@pytest.mark.parametrize("opened", ["gcs_url"], indirect=True)
def test_gcs_emulator_ignores_generation_preconditions(opened: FsspecStore) -> None:
    """Documents the emulator, so the suite's expected failures have a checked reason."""
    first = opened.put("k", b"one", if_absent=True)
    opened.put("k", b"two", if_absent=True)  # real GCS: 412
    opened.put("k", b"three", if_version=first)  # real GCS: 412
    entry = opened.get("k")
    assert entry is not None
    assert entry.data == b"three"
    assert entry.version.isdigit()  # a generation


@pytest.mark.parametrize("opened", ["azure_url", "gcs_url"], indirect=True)
def test_versions_change_with_every_write(opened: FsspecStore) -> None:
    """An Azure ETag or GCS generation is new per write. (An S3 ETag is the MD5 of a
    single-part upload: equal bytes, equal version, which is harmless for a CAS.)"""
    version = opened.put("k", b"same")
    assert opened.put("k", b"same") != version


def test_memory_filesystem_refuses_conditional_writes(memory_fs_store: FsspecStore) -> None:
    capabilities = memory_fs_store.capabilities
    assert not capabilities.create_only
    assert not capabilities.compare_and_swap
    version = memory_fs_store.put("k", b"one")
    with pytest.raises(UnsupportedOperation):
        memory_fs_store.put("k", b"two", if_absent=True)
    with pytest.raises(UnsupportedOperation):
        memory_fs_store.put("k", b"two", if_version=version)
    entry = memory_fs_store.get("k")
    assert entry is not None
    assert entry.data == b"one"


# -- URLs and options ------------------------------------------------------------------------


@pytest.mark.parametrize("opened", CLOUD_URLS, indirect=True)
def test_url_opens_the_same_store_in_a_subprocess(
    opened: FsspecStore, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(request.node.callspec.params["opened"])
    opened.put("from/parent", b"hello")
    script = (
        "import sys; from cachekit import open_store; s = open_store(sys.argv[1]); "
        "s.put('from/child', s.get('from/parent').data + b' back'); s.close()"
    )
    subprocess.run([sys.executable, "-c", script, url], check=True, timeout=60)
    entry = opened.get("from/child")
    assert entry is not None
    assert entry.data == b"hello back"


def test_query_values_become_storage_options() -> None:
    store = FsspecStore.from_url(
        "memory://root/prefix?use_listings_cache=false&skip_instance_cache=true"
    )
    fs = store._fs
    assert fs is not None
    assert isinstance(fs, MemoryFileSystem)


def test_fsspec_configuration_supplies_options(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FSSPEC_S3_ENDPOINT_URL`` reaches the store the way fsspec users expect."""
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    bucket = f"ck-{uuid.uuid4().hex[:20]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    store = open_store(f"s3://{bucket}/cache")
    store.put("k", b"configured")
    entry = store.get("k")
    assert entry is not None
    assert entry.data == b"configured"


def test_fsspec_environment_variables_are_read_by_fsspec(s3_endpoint: str) -> None:
    script = (
        "import sys, fsspec; fs = fsspec.filesystem('s3', skip_instance_cache=True); "
        "fs.mkdir(sys.argv[1]); from cachekit import open_store; "
        "s = open_store('s3://' + sys.argv[1] + '/p'); s.put('k', b'v'); print(s.list())"
    )
    bucket = f"ck-{uuid.uuid4().hex[:20]}"
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": s3_endpoint}
    result = subprocess.run(
        [sys.executable, "-c", script, bucket],
        env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "['k']"


def test_repeated_option_is_refused() -> None:
    with pytest.raises(InvalidURL, match="twice"):
        FsspecStore.from_url("memory://root?auto_mkdir=true&auto_mkdir=false")


def test_unknown_protocol_is_an_invalid_url() -> None:
    with pytest.raises(InvalidURL, match="not a known fsspec protocol"):
        open_store("nosuchprotocol://bucket/path")


def test_root_is_required() -> None:
    with pytest.raises(InvalidURL, match="root"):
        FsspecStore(MemoryFileSystem(), "/")


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("s3://bucket/p", "s3fs", "s3"),
        ("gs://bucket/p", "gcsfs", "gcs"),
        ("az://container/p", "adlfs", "azure"),
    ],
)
def test_missing_library_names_the_extra(url: str, module: str, extra: str) -> None:
    """In a subprocess where the filesystem's package cannot be imported."""
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from cachekit import open_store, InvalidURL\n"
        "try:\n    open_store(sys.argv[1])\n"
        "except InvalidURL as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, url], check=True, capture_output=True, text=True
    )
    assert f"pip install 'pytest-cachekit[{extra}]'" in result.stdout


# -- failures and secrets ---------------------------------------------------------------------


DEAD_URLS = {
    "s3": f"s3://bucket/p?endpoint_url=http://{LOOPBACK}:{CLOSED_PORT}",
    "gcs": f"gs://bucket/p?endpoint_url=http://{LOOPBACK}:{CLOSED_PORT}&token=anon",
    "azure": "az://container/p?"
    + urlencode(
        {
            "connection_string": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=c2VjcmV0LWtleQ==;"
            f"BlobEndpoint=http://{LOOPBACK}:{CLOSED_PORT}/devstoreaccount1;"
        }
    ),
}


@pytest.mark.parametrize("url", DEAD_URLS.values(), ids=DEAD_URLS.keys())
def test_dead_endpoint_is_unavailable_quickly(url: str) -> None:
    store = open_store(url)
    operations = [
        lambda: store.get("k"),
        lambda: store.put("k", b"v"),
        lambda: store.get_many(["a", "b"]),
        lambda: store.delete_many(["a"]),
        store.list,
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            operation()
        assert time.monotonic() - started < 10
        assert "c2VjcmV0LWtleQ" not in str(raised.value)
    store.close()


def test_secrets_never_appear_in_repr_or_errors() -> None:
    url = "az://container/p?" + urlencode(
        {
            "sas_token": "sig-secret",
            "connection_string": "AccountName=acct;AccountKey=c2VjcmV0LWtleQ==;"
            f"BlobEndpoint=http://{LOOPBACK}:{CLOSED_PORT}/acct",
        }
    )
    with pytest.raises(InvalidURL) as raised:
        FsspecStore.from_url(url.replace("az://", "nosuchprotocol://"))
    store = FsspecStore.from_url(url)
    for text in (repr(store), str(raised.value)):
        assert "c2VjcmV0" not in text
        assert "sig-secret" not in text
    store.close()


def test_closed_store_refuses_use(memory_fs_store: FsspecStore) -> None:
    memory_fs_store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        memory_fs_store.get("k")


@pytest.mark.parametrize("opened", CLOUD_URLS, indirect=True)
def test_list_ignores_objects_outside_the_root(
    opened: FsspecStore, request: pytest.FixtureRequest
) -> None:
    fs = opened._fs
    root = opened._root
    fs.pipe_file(f"{root}-sibling/x", b"outside")
    fs.pipe_file(f"{root.rpartition('/')[0]}/y", b"outside")
    opened.put("in/side", b"inside")
    assert opened.list() == ["in/side"]
    assert opened.list("in/s") == ["in/side"]
