"""URLs are printed without their credentials, wherever cachekit prints them."""

from __future__ import annotations

import pytest

from cachekit import redact_url
from cachekit.urls import REDACTED, redact_text


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
        # a URL in the query (an endpoint) is redacted as a URL
        ("s3://b/p?endpoint_url=http://user:hunter2@10.0.0.1:9000",
         "s3://b/p?endpoint_url=http://***@10.0.0.1:9000"),
        ("s3://b/p?endpoint_url=user:hunter2@10.0.0.1:9000&region=x",
         "s3://b/p?endpoint_url=***@10.0.0.1:9000&region=x"),
    ],
)  # fmt: skip
def test_credentials_never_survive_redaction(url: str, printed: str) -> None:
    assert redact_url(url) == printed
    assert "hunter2" not in redact_url(url)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        # s3fs takes the user info for part of the bucket name and quotes it.
        ("Invalid bucket name 'AKIAUSER:hunter2@bucket'", "s3://AKIAUSER:hunter2@bucket/x"),
        ("GET s3://AKIAUSER:hunter2@bucket/x failed", "s3://AKIAUSER:hunter2@bucket/x"),
        ("password hunter2 rejected", "https://user:hunter2@host/x"),
        ("token hunter2 expired", "https://hunter2@host/x"),
        ("bad key hunter2", "az://c/p?account_name=dev&account_key=hunter2"),
        ("proxy http://someone:hunter2@10.0.0.1:3128 refused", ""),
        # the endpoint's user info, quoted whole or percent-encoded inside the store URL
        (
            "connect to http://u1:hunter2@10.0.0.1:9 failed",
            "s3://b/p?endpoint_url=http://u1:hunter2@10.0.0.1:9",
        ),
        ("store s3://b/p?endpoint_url=http://u1:hunter2%4010.0.0.1:9 is unavailable", ""),
        ("bad password hunter2", "s3://b/p?endpoint_url=http://someone:hunter2@10.0.0.1:9"),
    ],
)
def test_error_texts_lose_every_secret_of_the_url(text: str, url: str) -> None:
    shown = redact_text(text, url)
    assert "hunter2" not in shown
    assert REDACTED in shown


def test_redaction_leaves_a_text_without_secrets_alone() -> None:
    text = "bucket 'b' not found at s3://b/p?endpoint_url=http://127.0.0.1:9"
    assert redact_text(text, "s3://b/p?endpoint_url=http://127.0.0.1:9") == text
