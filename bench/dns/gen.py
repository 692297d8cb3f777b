#!/usr/bin/env python3
"""Writes the same names for shoal-dns (TOML) and Unbound (local-data),
and a dnsperf query file mixing service, tasks., SRV and NXDOMAIN names.

  gen.py OUTDIR --services N --tasks T --port-shoal P --port-unbound P
  gen.py OUTDIR --big-only --services N --tasks T   (big.toml only)
"""
import argparse
import os
import random


def ip(i):
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def vip(s):
    return f"172.{16 + ((s >> 16) & 15)}.{(s >> 8) & 255}.{s & 255}"


def shoal_toml(services, tasks, port, healthy_share=1.0):
    out = ['domain = "shoal"', "ttl = 5", "", "[[network]]", 'name = "front"']
    if port:
        out.append(f'listen = ["127.0.0.1:{port}"]')
    n = 1
    for s in range(services):
        out += ["", "[[network.service]]", f'name = "web-{s}"', f'vip = "{vip(s)}"',
                'ports = [{ name = "http", port = 80 }]', "tasks = ["]
        for t in range(tasks):
            out.append(f'  {{ name = "web-{s}.{t}", ip = "{ip(n)}" }},')
            n += 1
        out.append("]")
    return "\n".join(out) + "\n"


def unbound_conf(services, tasks, port, workdir):
    out = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{workdir}"',
        '  pidfile: ""',
        '  logfile: ""',
        "  use-syslog: no",
        "  verbosity: 0",
        "  num-threads: 1",
        "  do-ip6: no",
        "  access-control: 127.0.0.0/8 allow",
        '  module-config: "iterator"',
        '  local-zone: "shoal." static',
        '  local-data: "shoal. 5 IN SOA ns.shoal. hostmaster.shoal. 1 3600 600 86400 5"',
    ]
    n = 1
    for s in range(services):
        out.append(f'  local-data: "web-{s}.shoal. 5 IN A {vip(s)}"')
        out.append(f'  local-data: "_http._tcp.web-{s}.shoal. 5 IN SRV 0 10 80 web-{s}.front.shoal."')
        for t in range(tasks):
            out.append(f'  local-data: "tasks.web-{s}.shoal. 5 IN A {ip(n)}"')
            out.append(f'  local-data: "web-{s}.{t}.shoal. 5 IN A {ip(n)}"')
            n += 1
    out += ["remote-control:", "  control-enable: no"]
    return "\n".join(out) + "\n"


def queries(services, count=100000, seed=7):
    rnd = random.Random(seed)
    lines = []
    for i in range(count):
        s = rnd.randrange(services)
        kind = i % 4
        if kind == 0:
            lines.append(f"web-{s}.shoal A")
        elif kind == 1:
            lines.append(f"tasks.web-{s}.shoal A")
        elif kind == 2:
            lines.append(f"_http._tcp.web-{s}.shoal SRV")
        else:
            lines.append(f"nope-{s}.shoal A")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--port-shoal", type=int, default=0)
    p.add_argument("--port-unbound", type=int, default=0)
    p.add_argument("--big-only", action="store_true")
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    if a.big_only:
        with open(os.path.join(a.outdir, "big.toml"), "w") as f:
            f.write(shoal_toml(a.services, a.tasks, 0))
        return
    with open(os.path.join(a.outdir, "shoal.toml"), "w") as f:
        f.write(shoal_toml(a.services, a.tasks, a.port_shoal))
    with open(os.path.join(a.outdir, "unbound.conf"), "w") as f:
        f.write(unbound_conf(a.services, a.tasks, a.port_unbound, a.outdir))
    with open(os.path.join(a.outdir, "queries.txt"), "w") as f:
        f.write(queries(a.services))


if __name__ == "__main__":
    main()
