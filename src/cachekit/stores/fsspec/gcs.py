"""Google Cloud Storage (gcsfs): generations as versions, ``ifGenerationMatch`` writes.

gcsfs can send ``ifGenerationMatch=0`` (create-only) but no other generation, and its
request wrapper retries a refused connection for about a minute, logging tracebacks on
the way. So this module makes its own single requests on gcsfs's HTTP session, with
gcsfs's headers (credentials, user agent) and parameters (requester pays), and a short
bounded retry for answers that invite one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from cachekit.errors import PreconditionFailed
from cachekit.stores.base import Entry
from cachekit.stores.fsspec.backend import AsyncBackend, gather_bounded

#: Statuses worth one more try after a short pause: throttling and server trouble.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_DELAYS = (0.2, 1.0)
_GENERATION_HEADER = "x-goog-generation"
_BOUNDARY = "cachekit-part-boundary"
_LIST_FIELDS = "items(name),nextPageToken"


def _multipart(key: str, data: bytes) -> bytes:
    """A multipart upload body: the object's name, then its bytes.

    Multipart rather than a media upload because gcp-storage-emulator drops the
    connection on an empty media upload, and an empty value is a valid value.
    """
    metadata = json.dumps({"name": key})
    head = (
        f"--{_BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
        f"--{_BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


class GcsError(Exception):
    """A status GCS answered that no caller expected."""


class _Response:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class GcsBackend(AsyncBackend):
    """Objects in GCS buckets through gcsfs's session."""

    unavailable_errors = (*AsyncBackend.unavailable_errors, aiohttp.ClientError, GcsError)

    async def _get(self, path: str) -> Entry | None:
        bucket, key, _ = self.fs.split_path(path)
        response = await self._request(
            "GET", self._object_url("download", bucket, key), alt="media"
        )
        if response.status == 404:
            return None
        self._check(response, path)
        generation = response.headers.get(_GENERATION_HEADER)
        if generation is None:
            return await self._get_pinned(bucket, key, path)
        return Entry(response.body, generation)

    async def _get_pinned(self, bucket: str, key: str, path: str) -> Entry | None:
        """Read the generation first, then exactly that generation's bytes.

        Only for servers (emulators) that do not send ``x-goog-generation`` with a download;
        real GCS does, and takes one request.
        """
        response = await self._request("GET", self._object_url("", bucket, key))
        if response.status == 404:
            return None
        self._check(response, path)
        generation = str(json.loads(response.body)["generation"])
        response = await self._request(
            "GET", self._object_url("download", bucket, key), alt="media", generation=generation
        )
        if response.status == 404:
            return None
        self._check(response, path)
        return Entry(response.body, generation)

    async def _put(self, path: str, data: bytes, if_absent: bool, if_version: str | None) -> str:
        bucket, key, _ = self.fs.split_path(path)
        conditions = {}
        if if_absent:
            conditions["ifGenerationMatch"] = "0"
        if if_version is not None:
            conditions["ifGenerationMatch"] = if_version
        url = f"{self._base}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        response = await self._request(
            "POST",
            url,
            data=_multipart(key, data),
            content_type=f'multipart/related; boundary="{_BOUNDARY}"',
            uploadType="multipart",
            **conditions,
        )
        # 412: the generation did not match; 404 on a conditional write: no such object.
        if response.status == 412 or (response.status == 404 and if_version is not None):
            raise PreconditionFailed(f"conditional write of {path!r} lost in {self.url}")
        self._check(response, path)
        return str(json.loads(response.body)["generation"])

    async def _delete_many(self, paths: Sequence[str]) -> None:
        await gather_bounded(self._delete, paths)

    async def _delete(self, path: str) -> None:
        bucket, key, _ = self.fs.split_path(path)
        response = await self._request("DELETE", self._object_url("", bucket, key))
        if response.status != 404:
            self._check(response, path)

    async def _list(self, path_prefix: str) -> list[str]:
        bucket, key_prefix, _ = self.fs.split_path(path_prefix)
        url = f"{self._base}/storage/v1/b/{quote(bucket, safe='')}/o"
        paths: list[str] = []
        page: dict[str, Any] = {}
        while True:
            token = {"pageToken": page["nextPageToken"]} if "nextPageToken" in page else {}
            response = await self._request(
                "GET", url, prefix=key_prefix, fields=_LIST_FIELDS, **token
            )
            self._check(response, path_prefix)
            page = json.loads(response.body)
            paths.extend(f"{bucket}/{item['name']}" for item in page.get("items", []))
            if "nextPageToken" not in page:
                return paths

    @property
    def _base(self) -> str:
        return str(self.fs._location).rstrip("/")

    def _object_url(self, kind: str, bucket: str, key: str) -> str:
        api = f"{kind}/storage/v1" if kind else "storage/v1"
        return f"{self._base}/{api}/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"

    def _check(self, response: _Response, path: str) -> None:
        if response.status >= 400:
            text = response.body[:200].decode("utf-8", "replace")
            raise GcsError(f"HTTP {response.status} for {path!r}: {text}")

    async def _request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        **params: str,
    ) -> _Response:
        """One request, retried after a pause only for throttling or server errors."""
        headers = {"Content-Type": content_type} if content_type else None
        for delay in _RETRY_DELAYS:
            response = await self._send(method, url, data, headers, params)
            if response.status not in _RETRY_STATUSES:
                return response
            await asyncio.sleep(delay)
        return await self._send(method, url, data, headers, params)

    async def _send(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        params: dict[str, str],
    ) -> _Response:
        # gcsfs's private helpers carry its credentials and requester-pays parameter.
        session: Any = await self.fs._set_session()
        async with session.request(
            method,
            url,
            params=self.fs._get_params(params),
            headers=self.fs._get_headers(headers),
            data=data,
            timeout=self.fs.requests_timeout,
        ) as response:
            body = await response.read()
            return _Response(response.status, response.headers, body)
