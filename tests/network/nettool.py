"""Tiny TCP tools run inside network namespaces by the tests (``ip netns exec NS python nettool.py``).

    serve PORT [PORT ...]   accept on every port (all addresses); answer each connection with
                            the peer address the server sees, then close. Prints "ready".
    connect HOST PORT T     connect with a timeout of T seconds and print what the server
                            answered (the peer address it saw); exit 0, or exit 1 on failure.
    dns NAME SERVER [tcp]   ask SERVER (port 53) for NAME's A records over UDP (or TCP); print
                            the addresses one a line, or NXDOMAIN / REFUSED / rcode N; exit 1 on
                            no answer at all.
    dnsstub ADDR NAME IP    a DNS server on ADDR port 53 (UDP) answering NAME with IP and every
                            other name with NXDOMAIN. Prints "ready".
"""
import selectors
import socket
import struct
import sys

RCODES = {0: 'NOERROR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 5: 'REFUSED'}


def _qname(name):
    return b''.join(bytes([len(p)]) + p.encode() for p in name.rstrip('.').split('.')) + b'\0'


def _skip_name(data, pos):
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xc0:
            return pos + 2
        pos += 1 + length


def dns(name, server, proto='udp'):
    query = struct.pack('!HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack('!HH', 1, 1)
    try:
        if proto == 'tcp':
            sock = socket.create_connection((server, 53), timeout=3)
            sock.sendall(struct.pack('!H', len(query)) + query)
            size = struct.unpack('!H', sock.recv(2))[0]
            data = b''
            while len(data) < size:
                data += sock.recv(size - len(data))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(3)
            sock.sendto(query, (server, 53))
            data = sock.recv(4096)
        sock.close()
    except OSError as exc:
        print('failed: %s' % exc)
        return 1
    rcode = data[3] & 15
    if rcode:
        print(RCODES.get(rcode, 'rcode %d' % rcode))
        return 0
    count = struct.unpack('!H', data[6:8])[0]
    pos = _skip_name(data, 12) + 4
    for _answer in range(count):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, length = struct.unpack('!HHIH', data[pos:pos + 10])
        pos += 10
        if rtype == 1:
            print(socket.inet_ntoa(data[pos:pos + length]))
        pos += length
    return 0


def dnsstub(addr, name, ip):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    print('ready', flush=True)
    want = _qname(name).lower()
    while True:
        data, peer = sock.recvfrom(4096)
        end = _skip_name(data, 12)
        question = data[12:end + 4]
        asked = data[12:end].lower()
        if asked == want and data[end:end + 2] == b'\x00\x01':
            answer = b'\xc0\x0c' + struct.pack('!HHIH', 1, 1, 60, 4) + socket.inet_aton(ip)
            head = struct.pack('!HHHHHH', struct.unpack('!H', data[:2])[0], 0x8180, 1, 1, 0, 0)
            sock.sendto(head + question + answer, peer)
        else:
            head = struct.pack('!HHHHHH', struct.unpack('!H', data[:2])[0], 0x8183, 1, 0, 0, 0)
            sock.sendto(head + question, peer)


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
    elif sys.argv[1] == 'dns':
        sys.exit(dns(*sys.argv[2:]))
    elif sys.argv[1] == 'dnsstub':
        dnsstub(*sys.argv[2:])
    else:
        sys.exit(connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
