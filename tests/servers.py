"""Real storage servers on loopback for the tests: moto (S3), Azurite (Blob), GCS emulator.

Each server runs in its own subprocess on 127.0.0.1 and a free port, started once per
session and stopped at its end. A missing server binary fails the tests that need it,
with what to install: a skip would let a broken setup pass silently.

Store URLs carry the endpoint in their query, so `cachekit.open_store(url)` works in this
process and in subprocesses alike; credentials come from the environment (see
``conftest.py``, which sets static fake ones before any cloud library loads).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: A port nothing listens on: cloud metadata probes are pointed here and fail at once.
CLOSED_PORT = 9
#: Azurite's documented development account (public; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
STARTUP_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1

FAKE_CLOUD_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": f"{LOOPBACK}:{CLOSED_PORT}",
    "GCE_METADATA_IP": f"{LOOPBACK}:{CLOSED_PORT}",
    # gcsfs's experimental class probes each bucket's layout over gRPC first; against
    # the emulator that probe times out after 60 s. cachekit's GCS requests skip it.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}
#: Variables that could lead a cloud library to real credentials or a real endpoint.
UNSET_CLOUD_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
)


def use_fake_cloud_credentials(environ: MutableMapping[str, str] = os.environ) -> None:
    """Static fake credentials, and every metadata probe pointed at a closed local port."""
    for name in UNSET_CLOUD_ENVIRONMENT:
        environ.pop(name, None)
    for name in [name for name in environ if name.startswith("FSSPEC_")]:
        environ.pop(name)
    environ.update(FAKE_CLOUD_ENVIRONMENT)
    environ["AWS_CONFIG_FILE"] = os.devnull
    environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    """Poll until ``port`` accepts connections; fail with the server's log if it never does."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{name} did not listen on {LOOPBACK}:{port} within {STARTUP_TIMEOUT}s")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even killed outright, so a
    timed-out session leaves no server behind (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def running(name: str, command: list[str], port: int, workdir: Path) -> Iterator[None]:
    """Run ``command`` in its own process until the block ends; stop it then."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    try:
        wait_for_port(port, process, log, name)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def find_executable(name: str, *candidates: Path | str | None) -> str:
    """The first existing candidate path, else ``name`` on PATH, else a clear test failure."""
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {INSTALL_HINTS[name]}")
    return found


INSTALL_HINTS = {
    "azurite-blob": "run `npm install` in the repository (package.json pins azurite), "
    "or set AZURITE_BLOB to the azurite-blob executable",
    "gcp-storage-emulator": "pip install gcp-storage-emulator (in the 'test' extra)",
}


def _moto_command(port: int) -> list[str]:
    try:
        import moto.server  # noqa: F401, PLC0415 (only to check it is installed)
    except ImportError:
        pytest.fail("moto's server is not installed: pip install 'moto[server]' (the 'test' extra)")
    return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]


def _azurite_command(port: int) -> list[str]:
    binary = find_executable(
        "azurite-blob",
        REPOSITORY / "node_modules" / ".bin" / "azurite-blob",
        os.environ.get("AZURITE_BLOB"),
    )
    return [
        binary,
        "--blobHost", LOOPBACK,
        "--blobPort", str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
        # Without this Azurite sends telemetry to a host off this machine.
        "--disableTelemetry",
    ]  # fmt: skip


def _gcs_command(port: int) -> list[str]:
    binary = find_executable(
        "gcp-storage-emulator", Path(sys.executable).parent / "gcp-storage-emulator"
    )
    return [binary, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory"]


def unique_name(stem: str) -> str:
    """A fresh bucket or container name (lower case, 3-63 characters, valid everywhere)."""
    return f"{stem}-{uuid.uuid4().hex[:20]}"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of moto's S3 server."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("moto")
    with running("moto", _moto_command(port), port, workdir):
        yield f"http://{LOOPBACK}:{port}"


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of Azurite's blob service, with its well-known development key."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    with running("azurite", _azurite_command(port), port, workdir):
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://{LOOPBACK}:{port}/{AZURITE_ACCOUNT};"
        )


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of gcp-storage-emulator."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("gcs")
    with running("gcp-storage-emulator", _gcs_command(port), port, workdir):
        yield f"http://{LOOPBACK}:{port}"


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """``s3://`` URL of a fresh, empty bucket on moto."""
    return new_s3_bucket(s3_endpoint)


def new_s3_bucket(endpoint: str) -> str:
    """Create an empty bucket on the S3 server at ``endpoint``; its ``s3://`` URL."""
    import s3fs  # noqa: PLC0415 (cloud libraries load after conftest set the environment)

    bucket = unique_name("ck")
    s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/cache?{urlencode({'endpoint_url': endpoint})}"


@pytest.fixture
def azure_url(azurite_connection_string: str) -> str:
    """``az://`` URL of a fresh, empty container on Azurite.

    The connection string goes in the query: Azurite's key is public, and a real one
    belongs in ``AZURE_STORAGE_CONNECTION_STRING`` instead (`redact_url` hides it anyway).
    """
    import adlfs  # noqa: PLC0415

    container = unique_name("ck")
    adlfs.AzureBlobFileSystem(
        connection_string=azurite_connection_string, skip_instance_cache=True
    ).mkdir(container)
    query = urlencode({"connection_string": azurite_connection_string})
    return f"az://{container}/cache?{query}"


@pytest.fixture
def gcs_url(gcs_endpoint: str) -> str:
    """``gs://`` URL of a fresh, empty bucket on the GCS emulator (anonymous access)."""
    import gcsfs  # noqa: PLC0415

    bucket = unique_name("ck")
    gcsfs.GCSFileSystem(
        endpoint_url=gcs_endpoint, token="anon", project="cachekit", skip_instance_cache=True
    ).mkdir(bucket)
    query = urlencode({"endpoint_url": gcs_endpoint, "token": "anon", "project": "cachekit"})
    return f"gs://{bucket}/cache?{query}"


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((LOOPBACK, 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            accepted.append(connection)  # held open, never read from or answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()
