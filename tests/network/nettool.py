"""Tiny TCP tools run inside network namespaces by the tests (``ip netns exec NS python nettool.py``).

    serve PORT [PORT ...]   accept on every port (all addresses); answer each connection with
                            the peer address the server sees, then close. Prints "ready".
    connect HOST PORT T     connect with a timeout of T seconds and print what the server
                            answered (the peer address it saw); exit 0, or exit 1 on failure.
"""
import selectors
import socket
import sys


def serve(ports):
    sel = selectors.DefaultSelector()
    for port in ports:
        for family, addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            sock.listen(16)
            sel.register(sock, selectors.EVENT_READ)
    print('ready', flush=True)
    while True:
        for key, _mask in sel.select():
            conn, peer = key.fileobj.accept()
            try:
                conn.sendall(('%s\n' % peer[0]).encode())
            except OSError:
                pass
            conn.close()


def connect(host, port, timeout):
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        data = sock.recv(200)
        sock.close()
    except OSError as exc:
        print('failed: %s' % exc)
        return 1
    print(data.decode().strip())
    return 0


if __name__ == '__main__':
    if sys.argv[1] == 'serve':
        serve([int(p) for p in sys.argv[2:]])
    else:
        sys.exit(connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
