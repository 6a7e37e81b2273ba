"""Segmentation jobs off the event loop: a few at once, a short queue, 503 beyond it.

Decoding and running the models take the CPU for tens of milliseconds (a slice) to
seconds (a scan). Run on the event loop, they would stop the server from answering
anyone else, ``/healthz`` included. ``JobGate`` runs each job in a worker thread,
at most ``running`` at once, lets at most ``queued`` more wait, and refuses the
rest at once with 503 and ``Retry-After``. A job whose client has gone while it
waited is never started; one whose client goes while it runs is stopped at its
next check (between two chunks of slices).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from lungseg.core.scratch import PREFIX, make_folder, sweep
from lungseg.errors import LungsegError

T = TypeVar("T")

UPLOAD_PREFIX = f"{PREFIX}upload-"
RETRY_AFTER_S = 2
WATCH_INTERVAL_S = 0.25


class Busy(LungsegError):
    """Every job slot and queue place is taken: answer 503 with ``Retry-After``."""


class ClientGone(LungsegError):
    """The client disconnected while its job waited; nothing was run."""


class JobGate:
    """At most ``running`` jobs at once and ``queued`` waiting (``lungseg serve`` settings).

    Thread-based, so one gate serves every event loop of its process (uvicorn runs
    one; test clients may run several).
    """

    def __init__(self, running: int, queued: int) -> None:
        if running < 1 or queued < 0:
            raise ValueError(f"need running >= 1 and queued >= 0, got {running}, {queued}")
        self.running, self.queued = running, queued
        self._slots = threading.Semaphore(running)
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    async def run(self, request: Request | None, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args, cancelled)`` in a worker thread once one of the ``running``
        slots is free. ``cancelled`` (a ``threading.Event``) is set when ``request``'s
        client disconnects; the job checks it as it goes and stops.

        Raises:
            Busy: too many jobs are running and waiting already.
            ClientGone: ``request``'s client disconnected before or while its job ran.
        """
        with self._lock:
            if self._admitted >= self.running + self.queued:
                raise Busy(
                    f"the server is busy ({self.running} running, {self.queued} waiting); "
                    f"try again in {RETRY_AFTER_S} s"
                )
            self._admitted += 1
        cancelled = threading.Event()
        watcher = None
        try:
            if request is not None:
                if await request.is_disconnected():
                    raise ClientGone("the client disconnected before its job started")
                watcher = asyncio.create_task(_watch(request, cancelled))
            return await run_in_threadpool(self._in_slot, job, args, cancelled)
        finally:
            if watcher is not None:
                watcher.cancel()
            with self._lock:
                self._admitted -= 1

    def _in_slot(
        self, job: Callable[..., T], args: tuple[object, ...], cancelled: threading.Event
    ) -> T:
        with self._slots:
            if cancelled.is_set():
                raise ClientGone("the client disconnected while its job waited")
            return job(*args, cancelled)


async def _watch(request: Request, cancelled: threading.Event) -> None:
    """Set ``cancelled`` once the client has gone (polled; the job itself runs in a thread)."""
    while not cancelled.is_set():
        if await request.is_disconnected():
            cancelled.set()
            return
        await asyncio.sleep(WATCH_INTERVAL_S)


def upload_folder() -> Path:
    """A private (0700) temporary folder for one upload, named with this process's id so
    that a later start can tell it was left by a process that died (``sweep_uploads``)."""
    return make_folder("upload")


def sweep_uploads(root: Path | None = None) -> list[Path]:
    """Remove the temporary folders (uploads, unzipped series) left by lungseg processes
    that no longer run (killed with ``kill -9``, or by the OOM killer)."""
    return sweep(root)
