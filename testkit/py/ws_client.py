"""A WebSocket client that checks an echo, for testkit::http::websocket_client.

Usage: python ws_client.py URL MESSAGES [HOST:PORT]

Connects to URL (to HOST:PORT instead when given, still sending URL's host as Host), sends
MESSAGES messages one at a time, text and binary in turn and of growing sizes, and checks
each comes back the same. Prints `ok: N messages echoed` and exits 0, or says what went
wrong and exits 1. Every step has a time limit.
"""

import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url, count, target):
    kwargs = {}
    if target:
        host, _, port = target.rpartition(":")
        kwargs = {"host": host.strip("[]"), "port": int(port)}
    async with connect(url, proxy=None, open_timeout=10, close_timeout=5, max_size=None, **kwargs) as ws:
        for i in range(count):
            text = f"message {i} " + "x" * (i * 97 % 4096)
            message = text if i % 2 == 0 else text.encode()
            await ws.send(message)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != message:
                print(f"message {i}: sent {message[:60]!r} ({len(message)}), got {got[:60]!r} ({len(got)})")
                return 1
    print(f"ok: {count} messages echoed")
    return 0


try:
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)))
except Exception as e:  # noqa: BLE001 - the message is the test's output
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(1)
