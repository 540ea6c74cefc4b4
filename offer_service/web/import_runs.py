"""Running an import off the event loop, one at a time per process: a small body in a worker
thread, a large one in a child process of its own.

The child (`python -m offer_service.web.import_runs FD JOB STORE_URL STORE_ID`) runs at a lower
CPU priority, reads the spooled body through the inherited descriptor FD, writes a catalog to
the store itself, and sends its outcome back on stdout as a pickle. Parsing in a thread shares
the interpreter lock with the event loop, which then answers other stores at half its pace or
worse; parsing in the child, and writing there, leaves the serving process nothing to do per
product.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.requests import Request

from offer_service import exceptions
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.importers.jobs import (
    CatalogOutcome,
    ImportJob,
    Outcome,
    import_catalog,
    parse_orders,
)
from offer_service.serving.children import child_env, lower_priority
from offer_service.storage import Store, open_store, shared_by_processes
from offer_service.web.endpoints.common import engine, settings
from offer_service.web.uploads import Upload


async def run_import(
    request: Request, job: ImportJob, upload: Upload, record: StoreRecord
) -> Outcome:
    """The outcome of `job` on the body in `upload`; a catalog is written to `record`'s store
    as it is read."""
    limiter: anyio.CapacityLimiter = request.app.state.import_limiter
    store_url = settings(request).store_url
    async with limiter:
        if not upload.on_disk or not shared_by_processes(store_url):
            return await _in_thread(request, job, upload, record)
        return await _in_child(job, upload, store_url, record.id)


async def _in_thread(
    request: Request, job: ImportJob, upload: Upload, record: StoreRecord
) -> Outcome:
    if not job.is_catalog:
        return await anyio.to_thread.run_sync(parse_orders, job, upload.file)
    store = engine(request).store

    def write(batch: list[Product]) -> int:
        return anyio.from_thread.run(store.upsert_products, record.id, batch)

    return await anyio.to_thread.run_sync(import_catalog, job, upload.file, write)


async def _in_child(job: ImportJob, upload: Upload, store_url: str, store_id: str) -> Outcome:
    descriptor = upload.file.fileno()
    command = [sys.executable, "-m", __name__, str(descriptor), job.as_argument()]
    child = await anyio.to_thread.run_sync(_start, [*command, store_url, store_id], descriptor)
    try:
        return await anyio.to_thread.run_sync(_outcome, child)
    finally:
        if child.poll() is None:  # cancelled: the client went away
            child.kill()
        await anyio.to_thread.run_sync(_close, child)


def _start(command: list[str], descriptor: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        pass_fds=(descriptor,),
        env=child_env(),
    )


def _outcome(child: subprocess.Popen[bytes]) -> Outcome:
    stdout: IO[bytes] = child.stdout  # type: ignore[assignment]
    try:
        tag, content = pickle.load(stdout)
    except EOFError:
        code = child.wait()
        raise RuntimeError(f"the import process ended without an outcome (exit {code})") from None
    if tag == "error":
        raise _error(*content)
    outcome: Outcome = content
    return outcome


def _error(kind: str, message: str, fields: dict[str, Any]) -> exceptions.OfferServiceError:
    """The child's error raised again here: an API error keeps its status, code and details."""
    error_class = getattr(exceptions, kind, None)
    if not (
        isinstance(error_class, type) and issubclass(error_class, exceptions.OfferServiceError)
    ):
        return exceptions.StoreError(message)
    if issubclass(error_class, exceptions.ApiError):
        return error_class(message, **fields)
    return error_class(message)


def _close(child: subprocess.Popen[bytes]) -> None:
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def child_main(argv: Sequence[str]) -> int:
    """The child: run the job on the body at descriptor argv[0], its outcome to stdout."""
    lower_priority()
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the outcome on the pipe
    descriptor, job_text, store_url, store_id = argv
    job = ImportJob.from_argument(job_text)
    with os.fdopen(int(descriptor), "rb") as source:
        try:
            outcome = asyncio.run(_child_outcome(job, source, store_url, store_id))
            answer: tuple[str, Any] = ("outcome", outcome)
        except exceptions.ApiError as exc:
            fields = {"code": exc.code, "status_code": exc.status_code, "details": exc.details}
            answer = ("error", (type(exc).__name__, exc.message, fields))
        except exceptions.OfferServiceError as exc:
            answer = ("error", (type(exc).__name__, str(exc), {}))
    pickle.dump(answer, out, pickle.HIGHEST_PROTOCOL)
    out.flush()
    return 0


async def _child_outcome(
    job: ImportJob, source: IO[bytes], store_url: str, store_id: str
) -> Outcome:
    if not job.is_catalog:
        return parse_orders(job, source)
    store = open_store(store_url, create=False)
    await store.open()
    try:
        return await import_catalog_into(store, store_id, job, source)
    finally:
        await store.close()


async def import_catalog_into(
    store: Store, store_id: str, job: ImportJob, source: IO[bytes]
) -> CatalogOutcome:
    """`import_catalog` in a worker thread, written to `store` from this loop: for a process
    of its own (the child, the CLI), where nothing else waits for the loop."""
    loop = asyncio.get_running_loop()

    def write(batch: list[Product]) -> int:
        return asyncio.run_coroutine_threadsafe(
            store.upsert_products(store_id, batch), loop
        ).result()

    return await asyncio.to_thread(import_catalog, job, source, write)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
