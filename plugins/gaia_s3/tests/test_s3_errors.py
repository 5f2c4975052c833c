"""Offline: failures are classified by code and status, and server text is tamed."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError
from gaia_s3.errors import MAX_DETAIL, analyse
from s3transfer.exceptions import RetriesExceededError


def client_error(code: str, status: int, message: str = "") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "HeadObject")


def test_not_found_codes() -> None:
    for code in ("404", "NoSuchKey", "NotFound"):
        assert analyse(client_error(code, 404)).key_not_found
    for code, status in (("403", 403), ("NoSuchBucket", 404), ("AccessDenied", 403), ("InternalError", 500)):
        assert not analyse(client_error(code, status)).key_not_found
    assert analyse(client_error("NoSuchBucket", 404)).bucket_not_found


def test_wrapped_errors_are_unwrapped() -> None:
    try:
        try:
            raise client_error("NoSuchKey", 404)
        except ClientError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert analyse(outer).key_not_found
    retried = RetriesExceededError(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert "could not connect" in analyse(retried).detail


def test_server_text_is_cut_short_and_printable() -> None:
    failure = analyse(client_error("SlowDown", 503, "x\x1b[31m\n" + "y" * 1000))
    assert len(failure.detail) <= MAX_DETAIL
    assert "\x1b" not in failure.detail and "\n" not in failure.detail
    assert failure.render().startswith("SlowDown (HTTP 503): ")
    assert analyse(client_error("403", 403, "Forbidden")).render() == "HTTP 403: Forbidden"
