"""An import's body, spooled to a temporary file as it arrives rather than held in memory."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

from starlette.requests import Request

from offer_service.exceptions import PayloadTooLarge
from offer_service.importers.text import FILE_IN_MEMORY_BYTES, file_chunks
from offer_service.types import is_whole, whole_in


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body is larger than this route's limit of {limit} bytes.")


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, refusing (413) as soon as it is known to exceed
    `limit`: from its declared length, before any is read, or from what has come."""
    declared = request.headers.get("content-length")
    # Digits past `limit`, however many of them (int() would refuse a few thousand).
    if declared is not None and is_whole(declared) and whole_in(declared, 0, limit) is None:
        raise too_large(limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


class Upload:
    """A request body in a temporary file: in memory up to FILE_IN_MEMORY_BYTES, on disk past
    that. Close it (or use it as a context manager) to let it go."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=FILE_IN_MEMORY_BYTES)  # noqa: SIM115
        self.size = 0

    @property
    def on_disk(self) -> bool:
        return self.size > FILE_IN_MEMORY_BYTES

    def chunks(self) -> Iterator[bytes]:
        """The body from its start, a chunk at a time."""
        return file_chunks(self.file)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def spool_body(request: Request, limit: int) -> Upload:
    """The body as an Upload, refusing (413) past `limit` as `limited_stream` does."""
    upload = Upload()
    try:
        async for chunk in limited_stream(request, limit):
            upload.file.write(chunk)
            upload.size += len(chunk)
    except BaseException:
        upload.close()
        raise
    upload.file.seek(0)
    return upload
