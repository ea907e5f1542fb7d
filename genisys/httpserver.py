"""An HTTP server that survives too many connections, idle and slow ones, and running out
of file descriptors; used by the Genisys API and by every connector.

Tornado alone keeps an idle or half-sent request for an hour, accepts connections until
the process runs out of file descriptors, and then retries the failing accept() in a
loop, logging a traceback each time (100% CPU, megabytes of log a second). Here:

- `timeout` bounds the wait for a request's headers (also between keep-alive requests)
  and for its body; a slow or silent client is disconnected after it.
- beyond `max_connections` open connections, a new one is closed at once, counted, and
  logged at most once every LOG_INTERVAL seconds.
- an accept() that fails for want of file descriptors (EMFILE, ENFILE) pauses accepting
  for ACCEPT_PAUSE seconds (the pending connections wait in the backlog) and is logged at
  most once every LOG_INTERVAL seconds.
- `tls_context()` makes HTTPS: pass it as `ssl_options`.
- `raise_fd_limit()` lifts the soft RLIMIT_NOFILE to the hard limit (at most
  MAX_FD_LIMIT) at start-up, where the system allows it.
"""

import errno
import logging
import resource
import socket
import ssl
import time

import tornado.httpserver
import tornado.netutil
from tornado.ioloop import IOLoop

DEFAULT_TIMEOUT = 30.0
# Enough for any real use; past it, the kernel's memory per descriptor starts to matter.
MAX_FD_LIMIT = 65536
ACCEPT_PAUSE = 0.5
LOG_INTERVAL = 10.0
# Accepts per readiness event, as Tornado does: fairness to the requests in progress.
ACCEPTS_PER_EVENT = 128
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

log = logging.getLogger("genisys.httpserver")


def raise_fd_limit(bound: int = MAX_FD_LIMIT) -> int:
    """Lift the soft file-descriptor limit to the hard one (at most `bound`); the soft
    limit in effect afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = bound if hard == resource.RLIM_INFINITY else min(hard, bound)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("raised the open file limit from %d to %d", soft, target)
            return target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d: %s", soft, exc)
    return soft


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server's TLS context for a certificate (PEM, with its chain) and its key;
    OSError (ssl.SSLError is one) naming the problem when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def default_max_connections() -> int:
    """Half the file-descriptor limit: the other half is for everything else (Consul and
    connector clients, log files, instances)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, (MAX_FD_LIMIT if soft == resource.RLIM_INFINITY else soft) // 2)


class _RateLimitedLog:
    """One warning per interval, saying how many times the problem happened since."""

    def __init__(self, message: str):
        self.message = message
        self.count = 0
        self.logged_at = None

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= LOG_INTERVAL:
            log.warning(self.message, self.count)
            self.count, self.logged_at = 0, now


class LimitedHTTPServer(tornado.httpserver.HTTPServer):
    """tornado.httpserver.HTTPServer with the limits above; use it as Tornado's."""

    def initialize(self, request_callback, timeout: float = DEFAULT_TIMEOUT,
                   max_connections: int | None = None, **kwargs) -> None:
        super().initialize(request_callback, idle_connection_timeout=timeout,
                           body_timeout=timeout, **kwargs)
        self.max_connections = max_connections or default_max_connections()
        self._refused = _RateLimitedLog(
            f"closed %d new connection(s): {self.max_connections} are open already")
        self._starved = _RateLimitedLog(
            "out of file descriptors: accepting paused %d time(s) for "
            f"{ACCEPT_PAUSE}s; raise the open file limit (ulimit -n)")

    def add_sockets(self, sockets) -> None:
        # Tornado's accept handler retries an accept() that fails with EMFILE at once, forever.
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_from(sock)

    def _accept_from(self, sock: socket.socket):
        """Accept connections from `sock` on the current loop; the function that stops it."""
        loop = IOLoop.current()
        paused = None

        def accept(fd, events) -> None:
            nonlocal paused
            for _ in range(ACCEPTS_PER_EVENT):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in _OUT_OF_DESCRIPTORS:
                        raise
                    self._starved.note()
                    loop.remove_handler(sock)
                    paused = loop.call_later(ACCEPT_PAUSE, resume)
                    return
                if len(self._connections) >= self.max_connections:
                    self._refused.note()
                    connection.close()
                    continue
                self._handle_connection(connection, address)

        def resume() -> None:
            nonlocal paused
            paused = None
            loop.add_handler(sock, accept, IOLoop.READ)

        def stop() -> None:
            if paused is not None:
                loop.remove_timeout(paused)
            else:
                loop.remove_handler(sock)

        loop.add_handler(sock, accept, IOLoop.READ)
        return stop
