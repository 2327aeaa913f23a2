"""A TCP relay between the host and a test sshd: adds delay, caps bandwidth, and cuts connections on demand
(after N bytes upstream, or now). The kernel here has no tc/netem; this is the slow, lossy or cut link."""

from __future__ import annotations

import asyncio
import socket
import threading


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int, delay_s: float = 0.0, bytes_per_s: float | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        self.bytes_per_s = bytes_per_s
        self.cut_after_bytes: int | None = None  # cut the next connection(s) after this many bytes upstream
        self.cuts = 0
        self.upstream_bytes = 0
        self._writers: list = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def __enter__(self) -> "Relay":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut_now(self) -> None:
        """Drop every open connection (a cable pulled)."""
        self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self.cuts += 1

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        budget = self.cut_after_bytes
        await asyncio.gather(self._pipe(reader, up_writer, budget, upstream=True), self._pipe(up_reader, writer, None),
                             return_exceptions=True)
        for w in (writer, up_writer):
            w.transport.abort()
            if w in self._writers:
                self._writers.remove(w)

    async def _pipe(self, reader, writer, budget, upstream: bool = False) -> None:
        sent = 0
        while True:
            data = await reader.read(16384)
            if not data:
                break
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.bytes_per_s:
                await asyncio.sleep(len(data) / self.bytes_per_s)
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if upstream:
                self.upstream_bytes += len(data)
            if budget is not None and sent >= budget:
                self.cut_after_bytes = None  # cut once: the reconnect goes through
                self._close_all()
                return
