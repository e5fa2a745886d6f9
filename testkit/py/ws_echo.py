"""A WebSocket echo server, for testkit::http::websocket_echo (the `websockets` package).

Usage: python ws_echo.py

Serves on 127.0.0.1 and a port the kernel chose, printed alone on the first line of stdout
once it listens; then prints `open PATH HOST` for each connection it accepts. Echoes every
message, text or binary, as it came.
"""

import asyncio

from websockets.asyncio.server import serve


async def echo(ws):
    print(f"open {ws.request.path} {ws.request.headers.get('Host', '-')}", flush=True)
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


asyncio.run(main())
