#!/usr/bin/python3
"""A TCP proxy on loopback that limits the upstream-to-client byte rate.

Shoal's integration tests put it between containerd and the registry so that
a pull takes long enough to be interrupted (shoald killed mid-pull) or to
overlap with another pull. Python 3 standard library only.

  throttle_proxy.py --upstream 127.0.0.1:PORT --rate BYTES_PER_SEC \
      --port-file FILE [--listen 127.0.0.1] [--log FILE]

It listens on a free port of --listen (only 127.0.0.0/8 is accepted), writes
that port to --port-file once it accepts connections, and logs each HTTP
request line and Range header it sees from clients (a heuristic scan of the
client-to-upstream bytes, good enough for test diagnostics). The rate limit is
per connection. SIGTERM stops it.
"""

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
import time

CHUNK = 64 * 1024


def loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else sys.stderr

    def __call__(self, msg):
        self.f.write("%.3f %s\n" % (time.time(), msg))


async def pump(reader, writer, rate, log, tag, scan):
    start = time.monotonic()
    sent = 0
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if scan:
                for line in data.split(b"\r\n"):
                    if (line[:4] in (b"GET ", b"HEAD", b"POST", b"PUT ")
                            or line.lower().startswith(b"range:")):
                        log("%s %s" % (tag, line.decode("latin-1")[:200]))
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if rate > 0:
                # Token bucket in its simplest form: never get ahead of
                # rate * elapsed.
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(args):
    up_host, up_port = args.upstream.rsplit(":", 1)
    if not loopback(up_host) or not loopback(args.listen):
        sys.exit("throttle_proxy: only loopback addresses are allowed")
    log = Log(args.log)
    counter = [0]

    async def handle(creader, cwriter):
        counter[0] += 1
        tag = "conn%d" % counter[0]
        try:
            ureader, uwriter = await asyncio.open_connection(up_host, int(up_port))
        except OSError as e:
            log("%s upstream connect failed: %s" % (tag, e))
            cwriter.close()
            return
        log("%s open" % tag)
        await asyncio.gather(
            pump(creader, uwriter, 0, log, tag, True),
            pump(ureader, cwriter, args.rate, log, tag, False))
        log("%s closed" % tag)

    server = await asyncio.start_server(handle, args.listen, 0)
    port = server.sockets[0].getsockname()[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.port_file)
    log("listening on %s:%d -> %s, %d bytes/s" % (args.listen, port, args.upstream, args.rate))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log("stopped")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--rate", type=float, default=0, help="bytes/s, 0 = unlimited")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    asyncio.run(main(ap.parse_args()))
