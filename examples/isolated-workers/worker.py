"""A tiny TCP worker, standard library only.

It binds 127.0.0.1:PORT and prints ``listening on PORT in net:[...]`` (its
network namespace), then answers every connection with the uppercased line
it received.  On stdin it obeys ``call`` (connect to itself and print
``reply: ...``) and ``quit`` (exit 0); at end of input it keeps serving.
If the port is taken it prints ``cannot bind ...`` and exits 1.
"""

import os
import socket
import sys
import threading


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(1024).upper())


def main() -> int:
    port = int(sys.argv[1])
    try:
        server = socket.create_server(("127.0.0.1", port))
    except OSError as exc:
        print(f"cannot bind 127.0.0.1:{port}: {exc.strerror}", flush=True)
        return 1
    port = server.getsockname()[1]
    print(f"listening on {port} in {os.readlink('/proc/self/ns/net')}", flush=True)
    threading.Thread(target=serve, args=(server,), daemon=True).start()
    for line in sys.stdin:
        if line.strip() == "call":
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(b"hello\n")
                print("reply:", conn.recv(1024).decode().strip(), flush=True)
        elif line.strip() == "quit":
            return 0
    threading.Event().wait()  # stdin closed (as under a supervisor): serve until stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())
