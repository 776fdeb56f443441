"""A socket-activated HTTP server: it serves on the socket nsup bound and passed as fd 3.

It reads the socket the way ``sd_listen_fds(3)`` does: ``LISTEN_PID`` must be
its own pid, ``LISTEN_FDS`` says how many descriptors start at 3, and
``LISTEN_FDNAMES`` names them.  Stdlib only; run it under nsup (see
``web-and-db.toml``), not by hand.
"""

import http.server
import os
import socket
import sys

SD_LISTEN_FDS_START = 3


def listen_sockets() -> dict[str, socket.socket]:
    """Return the sockets passed by the supervisor, by name (empty when not socket-activated)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    return {
        names[i] if i < len(names) else "unknown": socket.socket(fileno=SD_LISTEN_FDS_START + i)
        for i in range(count)
    }


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        schema = "none"
        if os.path.exists(sys.argv[1]):
            with open(sys.argv[1]) as f:
                schema = f.read().strip()
        body = f"hello from {socket.gethostname()}, pid {os.getpid()}; schema {schema}\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())


def main() -> None:
    sock = listen_sockets().get("http")
    if sock is None:
        sys.exit("hello_server: no socket named 'http' from the supervisor (LISTEN_FDS)")
    server = http.server.HTTPServer(sock.getsockname(), Hello, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    print("serving on", sock.getsockname(), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
