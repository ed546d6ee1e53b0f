"""URLs are printed without their credentials, wherever cachekit prints them."""

from __future__ import annotations

import pytest

from cachekit import redact_url


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("memory://", "memory://"),
        ("/a/plain/path", "/a/plain/path"),
        ("https://user:hunter2@host/x", "https://***@host/x"),
        ("https://token@host/x", "https://***@host/x"),
        ("s3://b/p?endpoint_url=http://127.0.0.1:9&secret_access_key=hunter2",
         "s3://b/p?endpoint_url=http://127.0.0.1:9&secret_access_key=***"),
        ("az://c/p?connection_string=AccountKey=hunter2;x=y", "az://c/p?connection_string=***"),
        ("az://c/p?account_name=dev&account_key=hunter2", "az://c/p?account_name=dev&account_key=***"),
        ("https://host/blob?sv=2020&sig=hunter2", "https://host/blob?sv=2020&sig=***"),
        ("gs://b/p?token=hunter2#frag", "gs://b/p?token=***#frag"),
    ],
)  # fmt: skip
def test_credentials_never_survive_redaction(url: str, printed: str) -> None:
    assert redact_url(url) == printed
    assert "hunter2" not in redact_url(url)
