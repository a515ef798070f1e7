"""Run a sandbox server on a background thread: for tests that call it over loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agents.sandbox.server import SandboxConfig, build_app, start_server


@dataclass(frozen=True)
class RunningSandbox:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """Return "http://host:port", the root every provider path hangs off."""
        return f"http://{self.host}:{self.port}"


@contextmanager
def sandbox_in_thread(
    config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """Serve a sandbox on its own event loop thread for the duration of the block.

    Port 0 picks a free port. On exit the server stops; requests still hanging are
    cancelled after a short grace period.
    """
    app = build_app(config or SandboxConfig())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox-provider", daemon=True)
    thread.start()
    try:
        started = asyncio.run_coroutine_threadsafe(
            start_server(app, host, port, shutdown_timeout=0.5), loop
        )
        runner, bound_port = started.result(timeout=10)
        try:
            yield RunningSandbox(host=host, port=bound_port)
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
