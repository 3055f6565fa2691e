"""`SilencingProxy`: a TCP proxy in front of the real broker with two faults for a chosen
client (by client id prefix):
- once armed, it lets the client's next Produce request through and then forwards
  nothing more to that connection: the broker answered, the client never hears;
- while held, every request of the client waits in the proxy (on every connection, new
  ones included) and goes on, in order, once released: the client is stalled, not cut.
Kafka frames are a 4-byte big-endian size and a body; a request body starts with
api_key (int16), api_version (int16), correlation_id (int32) and client_id (int16
length, bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.embedded.broker import EmbeddedBroker
from tests.reliability.conftest import FaultStack

PRODUCE = 0


@dataclass
class SilencingProxy:
    listen_port: int
    broker_port: int
    client_prefix: bytes  # whose connection to silence (Faust's clients: b"faust")
    silenced: list[int] = field(default_factory=list)  # correlation ids never answered
    _armed: threading.Event = field(default_factory=threading.Event)
    _held: bool = False
    _released: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> SilencingProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
            )
            ready.set()
            with contextlib.suppress(RuntimeError):
                self._loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=run, name="silencing-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def arm(self) -> None:
        self._armed.set()

    def hold(self) -> None:
        """From now on the client's requests wait in the proxy until `release()`."""
        self._on_loop(self._hold())

    def release(self) -> None:
        self._on_loop(self._release())

    def _on_loop(self, step: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(step, self._loop).result(10)

    async def _hold(self) -> None:
        self._held = True
        self._released = asyncio.Event()

    async def _release(self) -> None:
        self._held = False
        if self._released is not None:
            self._released.set()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            client_w.close()
            return
        silent = asyncio.Event()
        pumps = [
            asyncio.ensure_future(self._requests(client_r, broker_w, silent)),
            asyncio.ensure_future(self._responses(broker_r, client_w, silent)),
        ]
        # Either side closing ends both, as a direct connection would end.
        _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)  # a closed side ends its pump
        for writer in (client_w, broker_w):
            writer.close()

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, silent: asyncio.Event
    ) -> None:
        while True:
            frame = await _frame(source)
            api_key, _, correlation_id, id_length = struct.unpack(">hhih", frame[4:14])
            client_id = frame[14 : 14 + max(0, id_length)]
            ours = client_id.startswith(self.client_prefix)
            if ours and self._held and self._released is not None:
                await self._released.wait()
            if api_key == PRODUCE and ours and self._armed.is_set() and not silent.is_set():
                self._armed.clear()
                self.silenced.append(correlation_id)
                silent.set()
            sink.write(frame)
            await sink.drain()

    async def _responses(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, silent: asyncio.Event
    ) -> None:
        while True:
            frame = await _frame(source)
            if silent.is_set():
                continue  # read and dropped: the connection stays open and says nothing
            sink.write(frame)
            await sink.drain()


def fault_stack_behind(proxy: SilencingProxy, data_dir: Path) -> FaultStack:
    """A `FaultStack` whose broker advertises the proxy: every client, the worker's
    included, reaches the broker through it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "streams.embedded.stack.EmbeddedBroker",
            functools.partial(
                EmbeddedBroker, port=proxy.broker_port, advertised_port=proxy.listen_port
            ),
        )
        return FaultStack(data_dir)


async def _frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])
