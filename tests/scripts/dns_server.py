"""A one-name DNS server for the resolver tests: answers A queries for NAME with ADDRESS,
NODATA for NAME's other types, NXDOMAIN for everything else. Usage: dns_server.py LISTEN_IP NAME ADDRESS"""
import socket
import struct
import sys

listen, name, address = sys.argv[1], sys.argv[2].lower().rstrip("."), socket.inet_aton(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((listen, 53))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(512)
    if len(data) < 17:
        continue
    i, labels = 12, []
    while i < len(data) and data[i]:
        n = data[i]
        labels.append(data[i + 1 : i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    qtype = struct.unpack(">H", data[i + 1 : i + 3])[0]
    question = data[12 : i + 5]
    header = lambda flags, answers: data[:2] + struct.pack(">HHHHH", flags, 1, answers, 0, 0)
    if ".".join(labels) != name:
        reply = header(0x8183, 0) + question
    elif qtype == 1:
        reply = header(0x8180, 1) + question + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + address
    else:
        reply = header(0x8180, 0) + question
    sock.sendto(reply, peer)
