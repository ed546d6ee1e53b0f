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
