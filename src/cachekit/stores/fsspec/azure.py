"""Azure Blob Storage (adlfs): ETags as versions, ``overwrite=False`` and ETag matches.

adlfs lets a stale conditional write escape as ``ResourceModifiedError``; this module
calls the blob client itself and turns every lost precondition into `PreconditionFailed`.
A refused connection is not retried: the SDK's default would wait 15 s and more before
each retry, and a cache that cannot be reached should let the caller degrade at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from cachekit.errors import PreconditionFailed
from cachekit.stores.base import Entry
from cachekit.stores.fsspec.backend import AsyncBackend, gather_bounded


def _error_code(error: Exception) -> str:
    """The storage error code the SDK attaches to its exceptions (not typed there)."""
    return str(getattr(error, "error_code", ""))


#: Per-request options for the SDK's retry policy (see the module docstring).
_REQUEST_OPTIONS = {"retry_connect": 0}


class AzureBackend(AsyncBackend):
    """Blobs in Azure containers through adlfs's ``BlobServiceClient``."""

    unavailable_errors = (*AsyncBackend.unavailable_errors, AzureError)

    async def _get(self, path: str) -> Entry | None:
        container, blob, _ = self.fs.split_path(path)
        async with self.fs.service_client.get_blob_client(container, blob) as client:
            try:
                stream = await client.download_blob(**_REQUEST_OPTIONS)
            except ResourceNotFoundError as error:
                if _error_code(error) == "ContainerNotFound":
                    raise self.unavailable(error, "the container does not exist") from error
                return None
            data = await stream.readall()
        return Entry(data, str(stream.properties.etag))

    async def _put(self, path: str, data: bytes, if_absent: bool, if_version: str | None) -> str:
        container, blob, _ = self.fs.split_path(path)
        conditions: dict[str, object] = {"overwrite": not if_absent}
        if if_version is not None:
            conditions.update(etag=if_version, match_condition=MatchConditions.IfNotModified)
        async with self.fs.service_client.get_blob_client(container, blob) as client:
            try:
                result = await client.upload_blob(data, **conditions, **_REQUEST_OPTIONS)
            except (ResourceExistsError, ResourceModifiedError) as error:
                raise PreconditionFailed(
                    f"conditional write of {path!r} lost in {self.url}: {_error_code(error)}"
                ) from error
        return str(result["etag"])

    async def _delete_many(self, paths: Sequence[str]) -> None:
        await gather_bounded(self._delete, paths)

    async def _list(self, path_prefix: str) -> list[str]:
        container, blob_prefix, _ = self.fs.split_path(path_prefix)
        async with self.fs.service_client.get_container_client(container) as client:
            try:
                return [
                    f"{container}/{blob.name}"
                    async for blob in client.list_blobs(
                        name_starts_with=blob_prefix, **_REQUEST_OPTIONS
                    )
                ]
            except ResourceNotFoundError as error:
                raise self.unavailable(error, "the container does not exist") from error

    async def _delete(self, path: str) -> None:
        container, blob, _ = self.fs.split_path(path)
        async with self.fs.service_client.get_blob_client(container, blob) as client:
            try:
                await client.delete_blob(**_REQUEST_OPTIONS)
            except ResourceNotFoundError as error:
                if _error_code(error) == "ContainerNotFound":
                    raise self.unavailable(error, "the container does not exist") from error
