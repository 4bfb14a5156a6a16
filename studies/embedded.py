"""The embedded job queue: an in-process Redis-protocol server (fakeredis) so that the default install runs
real RQ workers with no Redis installed. Production sets REDIS_URL and never uses this module."""

import threading

from .workers import HeartbeatWorker


class EmbeddedWorker(HeartbeatWorker):
    """An RQ worker that tolerates the embedded server's CLIENT INFO reply."""

    def _set_ip_address(self, connection):
        # fakeredis formats the client address as a Python tuple, which redis-py cannot parse; the worker
        # only records it for display, so the loopback address is exact enough.
        self.ip_address = "127.0.0.1"


def start_server(host, port):
    """Serve the Redis protocol from this process on (host, port) in a daemon thread; returns the server."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer((host, port), server_type="redis")
    # One handler thread per client connection. A connection this process keeps open itself (the web side's
    # queue connection) never ends, so closing the server must not wait for handler threads: it would hang
    # the shutdown of `runembedded` for ever.
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True).start()
    return server
