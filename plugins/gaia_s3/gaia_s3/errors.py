"""Turn boto3 / botocore / s3transfer failures into short, structured facts.

Decisions use error codes and HTTP statuses, never message text. Server messages are
hostile input: they are cut short and stripped of control characters before they reach
a message (which the backend then redacts).
"""

from __future__ import annotations

import dataclasses

#: codes S3 and compatible stores use for "this key does not exist" (HEAD has no body: "404")
KEY_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
BUCKET_NOT_FOUND = frozenset({"NoSuchBucket"})
MAX_DETAIL = 160


@dataclasses.dataclass(frozen=True)
class Failure:
    code: str | None
    status: int | None
    detail: str

    @property
    def key_not_found(self) -> bool:
        return self.code in KEY_NOT_FOUND

    @property
    def bucket_not_found(self) -> bool:
        return self.code in BUCKET_NOT_FOUND

    def render(self) -> str:
        if self.code and self.status and self.code != str(self.status):
            head = f"{self.code} (HTTP {self.status})"
        elif self.status:
            head = f"HTTP {self.status}"
        else:
            head = self.code or ""
        if head and self.detail:
            return f"{head}: {self.detail}"
        return head or self.detail or "unknown error"


def analyse(exc: BaseException) -> Failure:
    """The code, status and a short description of ``exc`` or of the error it wraps."""
    from botocore.exceptions import BotoCoreError, ClientError

    exc = _unwrap(exc)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "") or (str(status) if status else None)
        return Failure(code, status, clean(str(error.get("Message") or "")))
    if isinstance(exc, BotoCoreError):
        return Failure(None, None, f"{type(exc).__name__}: {clean(str(exc))}")
    if isinstance(exc, OSError):
        return Failure(None, None, f"{type(exc).__name__}: {clean(exc.strerror or str(exc))}")
    return Failure(None, None, f"{type(exc).__name__}: {clean(str(exc))}")


def _unwrap(exc: BaseException) -> BaseException:
    """s3transfer and boto3 wrap the real error; follow the chain to it."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ClientError, BotoCoreError)):
            return current
        last = getattr(current, "last_exception", None)  # RetriesExceededError
        current = last if isinstance(last, BaseException) else (current.__cause__ or current.__context__)
    return exc


def clean(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
