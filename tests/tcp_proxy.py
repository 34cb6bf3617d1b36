"""A TCP relay in front of the S3 test endpoint, for outage tests.

moto keeps its objects in memory, so stopping the server itself would lose the bucket. The relay
stands in for the network instead: ``down()`` ends every open connection at once and resets every new one (as a
dead endpoint does) until ``up()``; the objects behind it survive.
"""

from __future__ import annotations

import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.refused = 0  # connections reset while down
        self._down = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        # close() alone does nothing to a connection while a pump thread is blocked in recv() on it: the kernel
        # keeps it open for that call, and the client waits out its request timeout (60 s in storage.py) instead
        # of seeing the endpoint die. shutdown() ends the connection at once and wakes the pumps.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected (yet, or any more)
            pass
        sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._down:
                    self.refused += 1
                    self._reset(client)
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                except OSError:
                    self._reset(client)
                    continue
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._open.discard(s)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        with self._lock:
            self._down = True
            for s in list(self._open):
                try:
                    self._reset(s)
                except OSError:
                    pass
            self._open.clear()

    def up(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.down()
        self.listener.close()
