"""A slow streaming upstream for the benchmarks (asyncio): every request on a keep-alive
connection gets N_EVENTS chunked SSE events, one every GAP seconds, then [DONE].
Usage: python3 slow_upstream.py PORT N_EVENTS GAP"""
import asyncio
import sys

PORT, N_EVENTS, GAP = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])


async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            if n:
                await r.readexactly(n)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
            await w.drain()
            for i in range(N_EVENTS):
                ev = b'data: {"choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n' % i
                w.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                await w.drain()
                await asyncio.sleep(GAP)
            ev = b"data: [DONE]\n\n"
            w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", PORT, backlog=4096)
    async with srv:
        await srv.serve_forever()


asyncio.run(main())
