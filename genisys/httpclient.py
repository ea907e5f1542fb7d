"""The HTTP client that Genisys uses for Consul and for connectors.

Tornado's curl client keeps connections alive: a call over a kept connection costs about
a tenth of one that opens its own, which matters for thousands of calls per cycle.
"""

from tornado.curl_httpclient import CurlAsyncHTTPClient


def curl_client(max_connections: int) -> CurlAsyncHTTPClient:
    return CurlAsyncHTTPClient(force_instance=True, max_clients=max_connections)


def close_client(client: CurlAsyncHTTPClient) -> None:
    """Close, even with requests still in flight (a blocking query at shutdown).

    Closing their curl handles makes libcurl schedule one more timer, which would then
    fire on the closed client and log a traceback: remove it too.
    """
    client.close()
    timer = getattr(client, "_timeout", None)
    if timer is not None:
        client.io_loop.remove_timeout(timer)
        client._timeout = None
