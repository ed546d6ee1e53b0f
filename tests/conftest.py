"""Shared test setup. The loopback servers' fixtures live in ``servers.py``.

Fake cloud credentials are set here, at import, before any cloud library loads: no test
may find real credentials or probe a metadata address or any host off this machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from servers import (
    azure_url,
    azurite_connection_string,
    gcs_endpoint,
    gcs_url,
    hanging_endpoint,
    s3_endpoint,
    s3_url,
    use_fake_cloud_credentials,
)

use_fake_cloud_credentials()

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _no_cachekit_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's or CI's own CACHEKIT_* settings must not reach the tests' pytest runs."""
    for name in ("CACHEKIT_URL", "CACHEKIT_SHARD", "CACHEKIT_TIMEOUT", "CACHEKIT_IN_PROCESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["dir", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store for the plugin to share its cache through: a directory (the same code path
    as any remote) and S3 on the loopback moto server."""
    if request.param == "dir":
        return str(tmp_path / "remote")
    url: str = request.getfixturevalue("s3_url")
    return url


__all__ = [
    "azure_url",
    "azurite_connection_string",
    "gcs_endpoint",
    "gcs_url",
    "hanging_endpoint",
    "s3_endpoint",
    "s3_url",
]


def _import_what_inner_runs_would_import_first() -> None:
    """Import, once, what the plugin loads lazily.

    pytester's in-process runs restore ``sys.modules`` afterwards: a module first imported
    inside an inner run is dropped and later imported again as a new object, while other
    modules keep the old one. Exception classes then stop matching (botocore's
    ``ClientError``) and multiprocessing's pickler breaks. Imported here, before any
    inner run, they are part of the snapshot and never re-imported.
    """
    import multiprocessing.connection  # noqa: PLC0415
    import multiprocessing.reduction  # noqa: PLC0415

    import adlfs  # noqa: PLC0415
    import gcsfs  # noqa: PLC0415
    import s3fs  # noqa: PLC0415

    import cachekit.stores.fsspec  # noqa: PLC0415
    import cachekit.stores.fsspec.azure  # noqa: PLC0415
    import cachekit.stores.fsspec.gcs  # noqa: PLC0415
    import cachekit.stores.fsspec.generic  # noqa: PLC0415
    import cachekit.stores.fsspec.s3  # noqa: PLC0415

    del multiprocessing, adlfs, gcsfs, s3fs, cachekit


_import_what_inner_runs_would_import_first()
