"""Running an import's job off the event loop: a small body in a worker thread, a large one in a
child process (see importers.jobs), one import at a time per process."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
import anyio.to_thread
from starlette.requests import Request

from offer_service import exceptions
from offer_service.importers.jobs import Frame, ImportJob, job_frames
from offer_service.web.uploads import Upload

NextFrame = Callable[[], Awaitable[Frame]]


@asynccontextmanager
async def import_run(request: Request, job: ImportJob, upload: Upload) -> AsyncIterator[NextFrame]:
    """A function that gives the job's next frame (see `job_frames`), in the order they come.

    A body still in memory is parsed in a worker thread. A larger one goes to a child process:
    parsing there never takes the interpreter lock from the event loop, which a thread does
    half of the time however it yields (a 256 MiB import tripled other stores' p99 that way).
    """
    limiter: anyio.CapacityLimiter = request.app.state.import_limiter
    async with limiter:
        if not upload.on_disk:
            frames = job_frames(job, upload.file)
            yield lambda: anyio.to_thread.run_sync(_next, frames)
            return
        command = [sys.executable, "-m", "offer_service.importers.jobs"]
        descriptor = upload.file.fileno()
        child = await anyio.to_thread.run_sync(
            lambda: subprocess.Popen(
                [*command, str(descriptor), job.as_argument()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                pass_fds=(descriptor,),
            )
        )
        try:
            yield lambda: anyio.to_thread.run_sync(_read_frame, child)
        finally:
            if child.poll() is None:
                child.kill()
            await anyio.to_thread.run_sync(_close, child)


def _next(frames: Iterator[Frame]) -> Frame:
    return next(frames)


def _read_frame(child: subprocess.Popen[bytes]) -> Frame:
    stdout: IO[bytes] = child.stdout  # type: ignore[assignment]
    try:
        tag, content = pickle.load(stdout)
    except EOFError:
        code = child.wait()
        raise RuntimeError(f"the import process ended without an answer (exit {code})") from None
    if tag == "error":
        raise _api_error(*content)
    frame: Frame = content
    return frame


def _api_error(
    kind: str, status: int, code: str, message: str, details: list[dict[str, Any]]
) -> exceptions.ApiError:
    error_class = getattr(exceptions, kind, exceptions.ApiError)
    if not (isinstance(error_class, type) and issubclass(error_class, exceptions.ApiError)):
        error_class = exceptions.ApiError
    return error_class(message, code=code, status_code=status, details=details)


def _close(child: subprocess.Popen[bytes]) -> None:
    child.wait()
    if child.stdout is not None:
        child.stdout.close()
