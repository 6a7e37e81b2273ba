"""Uvicorn's HTTP protocol with the guards it lacks: header and body timeouts and a
connection limit.

Uvicorn times out idle keep-alive connections only. A client that opens a
connection and sends its headers slowly, or a body at one byte a second, holds a
connection (and a file descriptor) for as long as it likes, and a thousand of them
make the server unreachable. ``GuardedH11Protocol`` closes a connection that

* has not sent a whole request head within ``header_timeout_s`` (from its opening,
  or from the end of its previous response);
* sends its body slower than ``min_body_rate`` bytes a second, measured over
  windows of ``RATE_WINDOW_S``;
* arrives while ``max_connections`` are open already, or while its client (its
  address) holds ``max_per_client`` of them: one client's slow uploads, each just
  above the body rate, cannot take every connection (0: no such limit).

Settings come from ``LUNGSEG_HEADER_TIMEOUT_S``, ``LUNGSEG_MIN_BODY_RATE``,
``LUNGSEG_MAX_CONNECTIONS`` and ``LUNGSEG_MAX_PER_CLIENT`` (``lungseg serve`` sets
them for its workers). Behind a reverse proxy (docs/serving.md) every connection
comes from the proxy: set the per-client limit to 0 there and let the proxy limit its
clients.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
MIN_BODY_RATE = 1024.0
MAX_CONNECTIONS = 256
MAX_PER_CLIENT = 32
RATE_WINDOW_S = 5.0


def _setting(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    return float(text) if text else default


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with header and body timeouts and a connection limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = _setting("LUNGSEG_HEADER_TIMEOUT_S", HEADER_TIMEOUT_S)
        self.min_body_rate = _setting("LUNGSEG_MIN_BODY_RATE", MIN_BODY_RATE)
        self.max_connections = int(_setting("LUNGSEG_MAX_CONNECTIONS", MAX_CONNECTIONS))
        self.max_per_client = int(_setting("LUNGSEG_MAX_PER_CLIENT", MAX_PER_CLIENT))
        self._guard: asyncio.TimerHandle | None = None
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections or self._client_full():
            transport.close()  # refuse at once: no file descriptor held for it
            return
        self._expect_head()

    def _client_full(self) -> bool:
        """Whether this connection's client holds more than ``max_per_client`` (this one
        included)."""
        if self.max_per_client <= 0 or not self.client:
            return False
        host = self.client[0]
        held = 0
        for other in self.connections:
            address: Any = getattr(other, "client", None)
            if address and address[0] == host:
                held += 1
        return held > self.max_per_client

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_guard()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        receiving_body = self.conn.their_state is h11.SEND_BODY
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if not receiving_body:  # the head is complete: now the body's rate counts
                self._body_bytes = 0
                self._arm(RATE_WINDOW_S, self._check_body_rate)
            self._body_bytes += len(data)
        elif state is not h11.IDLE:  # the request is complete: the app has it
            self._cancel_guard()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_head()  # a keep-alive connection: the next head has a deadline too

    def _expect_head(self) -> None:
        self._arm(self.header_timeout_s, self._close)

    def _check_body_rate(self) -> None:
        if self.conn.their_state is not h11.SEND_BODY:
            return
        if self._body_bytes < self.min_body_rate * RATE_WINDOW_S:
            self._close()
            return
        self._body_bytes = 0
        self._arm(RATE_WINDOW_S, self._check_body_rate)

    def _arm(self, delay: float, action: Any) -> None:
        self._cancel_guard()
        self._guard = self.loop.call_later(delay, action)

    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _close(self) -> None:
        self._guard = None
        if not self.transport.is_closing():
            self.transport.close()
