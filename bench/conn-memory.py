#!/usr/bin/env python3
"""Resident memory per joined, idle connection of `relais serve`.

Usage: python3 bench/conn-memory.py N tcp|ws   (needs target/release/relais)

Starts the release server on 127.0.0.1:17777/17778 without per-address
limits, joins N clients (500 per room) over TCP or WebSocket, waits a second,
and prints the server's RSS growth per connection. This is what the memory
budget's per-connection charges (budget.rs) are checked against.
"""
import asyncio, struct, sys, subprocess, time, os, socket, base64
N=int(sys.argv[1]); mode=sys.argv[2]  # tcp | ws | tcpidle
def hello(name):
    n=name.encode(); r=("r%d"%(int(name[1:])//500)).encode()
    body=bytes([1,0,1,0,len(n)])+n+bytes([len(r)])+r
    return body
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])*1024
async def tcp(i, port, idle):
    r,w=await asyncio.open_connection("127.0.0.1",port)
    if not idle:
        b=hello(f"p{i}"); w.write(struct.pack(">I",len(b))+b); await w.drain()
        hdr=await r.readexactly(4); await r.readexactly(struct.unpack(">I",hdr)[0])
    return r,w
async def ws(i, port, idle):
    r,w=await asyncio.open_connection("127.0.0.1",port)
    key=base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()); await w.drain()
    await r.readuntil(b"\r\n\r\n")
    if not idle:
        b=hello(f"p{i}"); mask=os.urandom(4)
        w.write(bytes([0x82,0x80|len(b)])+mask+bytes(c^mask[j%4] for j,c in enumerate(b))); await w.drain()
        h=await r.readexactly(2); ln=h[1]&0x7f
        if ln==126: ln=struct.unpack(">H",await r.readexactly(2))[0]
        await r.readexactly(ln)
    return r,w
async def main():
    p=subprocess.Popen([os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "relais"),"serve","--listen","127.0.0.1:17777","--ws-listen","127.0.0.1:17778","--max-connections-per-ip","0","--max-joins-per-ip","0"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    base=rss(p.pid)
    conns=[]
    f = tcp if mode.startswith("tcp") else ws
    port = 17777 if mode.startswith("tcp") else 17778
    idle = mode.endswith("idle")
    for i in range(N):
        conns.append(await f(i,port,idle))
    await asyncio.sleep(1)
    after=rss(p.pid)
    print(f"{mode}: {N} conns, RSS {base>>20} -> {after>>20} MiB, {(after-base)/N/1024:.1f} KiB per connection")
    p.terminate(); p.wait()
asyncio.run(main())
