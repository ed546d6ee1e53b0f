"""Shared test setup. The loopback servers' fixtures live in ``servers.py``.

Fake cloud credentials are set here, at import, before any cloud library loads: no test
may find real credentials or probe a metadata address or any host off this machine.
"""

from __future__ import annotations

from servers import (
    azure_url,
    azurite_connection_string,
    gcs_endpoint,
    gcs_url,
    s3_endpoint,
    s3_url,
    use_fake_cloud_credentials,
)

use_fake_cloud_credentials()

__all__ = [
    "azure_url",
    "azurite_connection_string",
    "gcs_endpoint",
    "gcs_url",
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

    import cachekit.stores._azure  # noqa: PLC0415
    import cachekit.stores._gcs  # noqa: PLC0415
    import cachekit.stores._generic  # noqa: PLC0415
    import cachekit.stores._s3  # noqa: PLC0415
    import cachekit.stores.fsspec  # noqa: PLC0415

    del multiprocessing, adlfs, gcsfs, s3fs, cachekit


_import_what_inner_runs_would_import_first()
