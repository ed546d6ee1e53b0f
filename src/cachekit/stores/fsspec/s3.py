"""S3 (s3fs): ETags as versions, conditional ``PutObject`` as create-only and CAS.

s3fs drops ``IfMatch`` silently for multipart uploads and with a botocore that lacks it,
so this module calls ``put_object`` on s3fs's own aiobotocore client itself, one request
per write, and asks botocore's operation model once whether the headers exist at all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cachekit.errors import PreconditionFailed, UnsupportedOperation
from cachekit.stores.base import Capabilities, Entry
from cachekit.stores.fsspec.backend import AsyncBackend, describe_error

#: Error codes of a lost conditional write: 412, and 409 for a concurrent conditional put.
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404"})
#: ``DeleteObjects`` takes at most this many keys.
_DELETE_BATCH = 1000


@functools.cache
def put_object_supports_conditions() -> bool:
    """Whether this botocore's ``PutObject`` has the ``IfNoneMatch`` and ``IfMatch`` members."""
    import botocore.session  # noqa: PLC0415 (loading the S3 model is slow; once, on demand)

    model = botocore.session.get_session().get_service_model("s3")
    members = model.operation_model("PutObject").input_shape.members
    return "IfNoneMatch" in members and "IfMatch" in members


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Backend(AsyncBackend):
    """Objects in one bucket through s3fs's aiobotocore client."""

    unavailable_errors = (*AsyncBackend.unavailable_errors, BotoCoreError, ClientError)

    @property
    def capabilities(self) -> Capabilities:
        conditional = put_object_supports_conditions()
        return Capabilities(create_only=conditional, compare_and_swap=conditional)

    async def _client(self, bucket: str) -> Any:
        await self.fs.set_session()
        return await self.fs.get_s3(bucket)

    async def _get(self, path: str) -> Entry | None:
        bucket, key, _ = self.fs.split_path(path)
        s3 = await self._client(bucket)
        try:
            response = await s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING_KEY_CODES:
                return None
            raise self._translate(error) from error
        async with response["Body"] as body:
            data = await body.read()
        return Entry(data, str(response["ETag"]))

    async def _put(self, path: str, data: bytes, if_absent: bool, if_version: str | None) -> str:
        conditions = self._conditions(path, if_absent, if_version)
        bucket, key, _ = self.fs.split_path(path)
        s3 = await self._client(bucket)
        try:
            response = await s3.put_object(Bucket=bucket, Key=key, Body=data, **conditions)
        except ClientError as error:
            # If-Match on a missing key answers 404: the version asked for is not there.
            if if_version is not None and _code(error) in _MISSING_KEY_CODES:
                raise PreconditionFailed(f"{path!r} does not exist in {self.url}") from error
            raise self._translate(error) from error
        return str(response["ETag"])

    def _conditions(self, path: str, if_absent: bool, if_version: str | None) -> dict[str, str]:
        conditions = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_version is not None:
            conditions["IfMatch"] = if_version
        if conditions and not put_object_supports_conditions():
            raise UnsupportedOperation(
                f"this botocore cannot send conditional PutObject; cannot write {path!r} "
                f"conditionally to {self.url} (upgrade botocore)"
            )
        return conditions

    async def _delete_many(self, paths: Sequence[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for path in paths:
            bucket, key, _ = self.fs.split_path(path)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            s3 = await self._client(bucket)
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
                await self._delete_batch(s3, bucket, batch)

    async def _delete_batch(self, s3: Any, bucket: str, batch: list[dict[str, str]]) -> None:
        try:
            response = await s3.delete_objects(
                Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
            )
        except ClientError as error:
            raise self._translate(error) from error
        failures = response.get("Errors", [])
        if failures:
            first = failures[0]
            raise self.unavailable(
                RuntimeError(f"{first.get('Code')}: {first.get('Message')}"),
                f"{len(failures)} keys not deleted, first {first.get('Key')!r}",
            )

    async def _list(self, path_prefix: str) -> list[str]:
        bucket, key_prefix, _ = self.fs.split_path(path_prefix)
        s3 = await self._client(bucket)
        paths: list[str] = []
        try:
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key_prefix
            ):
                paths.extend(f"{bucket}/{item['Key']}" for item in page.get("Contents", []))
        except ClientError as error:
            raise self._translate(error) from error
        return paths

    def _translate(self, error: ClientError) -> Exception:
        if _code(error) in _PRECONDITION_CODES:
            return PreconditionFailed(
                f"conditional write lost in {self.url}: {describe_error(error)}"
            )
        if _code(error) == "NoSuchBucket":
            return self.unavailable(error, "the bucket does not exist")
        return self.unavailable(error)
