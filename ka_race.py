import socket, time, sys, random
port = int(sys.argv[1]); res = {}
random.seed(1)
for n in range(40):
    gap = random.choice([0.9, 0.97, 1.0, 1.02, 1.05, 1.1, 1.5])
    time.sleep(gap)
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(5)
    s.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    got = b""
    while True:
        b = s.recv(65536)
        if not b: break
        got += b
    st = got.split(b" ")[1].decode()
    res.setdefault(gap, []).append(st)
for g in sorted(res): print(g, res[g])
