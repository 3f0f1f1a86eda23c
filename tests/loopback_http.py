"""A loopback aiohttp server for tests that need a fake exchange endpoint (tests bind only to
127.0.0.1)."""

from __future__ import annotations

from aiohttp import web


async def serve(handler, path: str = "/ws", method: str = "GET") -> tuple[web.AppRunner, int]:
    """``handler`` served at ``path`` on 127.0.0.1, a free port: ``(runner, port)``; the caller ends
    it with ``await runner.cleanup()``."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]
