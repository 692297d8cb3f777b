"""The demo's client service: looks `web` up by name through the network's
DNS (the gateway, from /etc/resolv.conf) and asks it once a second, printing
the address it resolved and the replica that answered.

Usage: python3 examples/client.py [NAME] [PORT]   (default web 8000)
"""

import socket
import sys
import time
import urllib.request

name = sys.argv[1] if len(sys.argv) > 1 else "web"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
while True:
    try:
        addr = socket.gethostbyname(name)
        with urllib.request.urlopen(f"http://{name}:{port}/", timeout=2) as r:
            print(f"{name} -> {addr}: {r.read().decode().strip()}", flush=True)
    except Exception as e:  # keep going: the demo kills things on purpose
        print(f"{name}: {e}", flush=True)
    time.sleep(1)
