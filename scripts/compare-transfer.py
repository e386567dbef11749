#!/usr/bin/env python3
"""peerlab's file transfer beside iperf3, iroh's sendme and libtorrent, on 127.0.0.1.

Point to point: one file (1 GiB by default) from one node to another through
`peerlab share` / `peerlab fetch` (two node processes, over QUIC and over TCP), beside
`iperf3` on loopback (the machine's unencrypted TCP ceiling, context only) and
`sendme send` / `sendme receive` of the same file (iroh: BLAKE3-verified, QUIC).

Swarm: one seeder and 8 fetchers of one file (256 MiB by default): 9 peerlab node
processes beside a libtorrent seeder and 8 libtorrent sessions, each in its own process
(torrent made with the bindings; every session `connect_peer`s the seeder and the other
leechers on 127.0.0.1; DHT, LSD, UPnP and NAT-PMP off).

Timing starts when the fetch is asked for (the file is already shared / hashed / seeded:
`peerlab share`, `sendme send` and libtorrent's piece hashing are outside the window, as is
the tools' start-up) and ends when the receiver has the whole verified file. CPU seconds are
user + system of every process of the system compared (sender and receivers), read from
/proc/<pid>/stat or getrusage over the same window, divided by the GiB moved.

Usage (see docs/experiments/compare.md):
  /usr/bin/python3 scripts/compare-transfer.py --peerlab target/release/peerlab \
      --sendme /work/tools/bin/sendme [--size-mib 1024] [--swarm-mib 256] [--json]

Needs: iperf3, python3-libtorrent (Debian) for the swarm part, sendme (`cargo install
sendme`). A part whose tool is missing is skipped and said so. Everything started is
stopped on exit, error or Ctrl-C; the work dir (default: a new temp dir) is removed.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
GIB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")
# How long one transfer may take before the run gives up on it.
TRANSFER_DEADLINE = 900
# How long a node or tool may take to start.
START_DEADLINE = 60

STARTED = []  # every Popen this script started, stopped at exit


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_secs(pid):
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def start(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        stop(p)


def wait_file(path, proc, what):
    end = time.time() + START_DEADLINE
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.time() > end:
            raise RuntimeError(f"{what}: no {path} after {START_DEADLINE} s")
        time.sleep(0.05)
    time.sleep(0.05)
    with open(path) as f:
        return f.read().strip()


def make_file(path, size):
    """`size` random bytes (incompressible), written once and reused."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        left = size
        while left:
            k = min(left, 16 * MIB)
            f.write(os.urandom(k))
            left -= k


def same_file(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- iperf3


def run_iperf3(size, port):
    exe = shutil.which("iperf3")
    if not exe:
        return {"skipped": "iperf3 not found (apt-get install -y iperf3)"}
    srv = start([exe, "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run([exe, "-c", "127.0.0.1", "-p", str(port), "-n", str(size), "-J"],
                         capture_output=True, text=True, timeout=TRANSFER_DEADLINE)
    stop(srv)
    r = json.loads(out.stdout)
    end = r["end"]
    secs = end["sum_received"]["seconds"]
    cpu = end["cpu_utilization_percent"]
    cpu_s = (cpu["host_total"] + cpu["remote_total"]) / 100.0 * secs
    return {
        "version": subprocess.run([exe, "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0],
        "secs": secs,
        "mib_per_sec": end["sum_received"]["bytes"] / MIB / secs,
        "cpu_secs_per_gib": cpu_s / (end["sum_received"]["bytes"] / GIB),
    }


# ---------------------------------------------------------------- peerlab


class PeerlabNodes:
    """Node processes in `work`/<name>, node 0 first, the others bootstrapping through it."""

    def __init__(self, exe, work, names, transport, base_port):
        self.exe, self.work, self.names = exe, work, names
        self.procs, self.dirs = [], []
        first_addr = None
        for i, name in enumerate(names):
            d = os.path.join(work, name)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            port = base_port + i
            listen = (f"/ip4/127.0.0.1/udp/{port}/quic-v1" if transport == "quic"
                      else f"/ip4/127.0.0.1/tcp/{port}")
            cmd = [exe, "node", "--data-dir", d, "--listen", listen,
                   "--transport", transport]
            if first_addr:
                cmd += ["--bootstrap", first_addr]
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
            logf = open(os.path.join(d, "node.log"), "ab")
            p = start(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=env)
            self.procs.append(p)
            self.dirs.append(d)
            addrs = wait_file(os.path.join(d, "listen.addrs"), p, f"peerlab node {name}")
            wait_file(os.path.join(d, "api.addr"), p, f"peerlab node {name}")
            if first_addr is None:
                want = "/quic-v1/" if transport == "quic" else "/tcp/"
                first_addr = next(a for a in addrs.split() if want in a)

    def cli(self, i, *args, timeout=TRANSFER_DEADLINE):
        out = subprocess.run([self.exe, *args, "--data-dir", self.dirs[i]],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"peerlab {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def cpu(self):
        return sum(cpu_secs(p.pid) for p in self.procs)

    def stop(self):
        for p in self.procs:
            stop(p)


def wait_members(nodes, count):
    """Until every node lists `count` alive members (itself included)."""
    end = time.time() + START_DEADLINE
    while time.time() < end:
        ok = 0
        for i in range(len(nodes.procs)):
            try:
                m = json.loads(nodes.cli(i, "members", "--json", timeout=10))
                alive = [x for x in m if str(x.get("state", "")).lower() == "alive"]
                ok += len(alive) >= count - 1
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                pass
        if ok == len(nodes.procs):
            return
        time.sleep(0.5)


def peerlab_p2p(exe, work, src, transport, port):
    nodes = PeerlabNodes(exe, work, ["p2p-seed", "p2p-fetch"], transport, port)
    try:
        wait_members(nodes, 2)
        t = time.time()
        cid = nodes.cli(0, "share", src)
        share_secs = time.time() - t
        out = os.path.join(work, f"p2p-{transport}.out")
        cpu0, t0 = nodes.cpu(), time.time()
        nodes.cli(1, "fetch", cid, "-o", out, "--force")
        secs = time.time() - t0
        cpu = nodes.cpu() - cpu0
        size = os.path.getsize(src)
        ok = same_file(src, out)
        os.remove(out)
        return {
            "transport": transport,
            "secs": secs,
            "mib_per_sec": size / MIB / secs,
            "cpu_secs_per_gib": cpu / (size / GIB),
            "share_secs": share_secs,
            "identical": ok,
        }
    finally:
        nodes.stop()


def peerlab_swarm(exe, work, src, fetchers, port):
    names = ["swarm-seed"] + [f"swarm-fetch-{k}" for k in range(fetchers)]
    nodes = PeerlabNodes(exe, work, names, "quic", port)
    try:
        wait_members(nodes, len(names))
        cid = nodes.cli(0, "share", src)
        outs = [os.path.join(work, f"swarm-{k}.out") for k in range(fetchers)]
        cpu0, t0 = nodes.cpu(), time.time()
        procs = [subprocess.Popen([exe, "fetch", cid, "-o", outs[k], "--force",
                                   "--data-dir", nodes.dirs[k + 1]],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for k in range(fetchers)]
        done = [None] * fetchers
        while any(d is None for d in done):
            for k, p in enumerate(procs):
                if done[k] is None and p.poll() is not None:
                    if p.returncode != 0:
                        raise RuntimeError(f"fetch {k}: {p.stderr.read().decode().strip()}")
                    done[k] = time.time() - t0
            if time.time() - t0 > TRANSFER_DEADLINE:
                raise RuntimeError("swarm fetches did not finish in time")
            time.sleep(0.02)
        cpu = nodes.cpu() - cpu0
        size = os.path.getsize(src)
        ok = all(same_file(src, o) for o in outs)
        for o in outs:
            os.remove(o)
        return swarm_figures(done, size, fetchers, cpu, ok)
    finally:
        nodes.stop()


def swarm_figures(done, size, fetchers, cpu, ok):
    """One seeder to `fetchers`: completion times (s after the start), the slowest
    fetcher's rate, CPU seconds per GiB delivered, and whether every copy is identical."""
    return {
        "completion_secs": sorted(done),
        "last_secs": max(done),
        "mib_per_sec_per_fetcher": size / MIB / max(done),
        "cpu_secs_per_gib": cpu / (size * fetchers / GIB),
        "identical": ok,
    }


# ---------------------------------------------------------------- sendme


def run_sendme(exe, work, src):
    if not exe or not os.path.exists(exe):
        return {"skipped": "sendme not found (cargo install sendme --root /work/tools)"}
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    sdir, rdir = os.path.join(work, "sendme-send"), os.path.join(work, "sendme-recv")
    for d in (sdir, rdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    name = os.path.basename(src)
    os.link(src, os.path.join(sdir, name)) if os.stat(src).st_dev == os.stat(sdir).st_dev \
        else shutil.copy(src, os.path.join(sdir, name))
    logp = os.path.join(work, "sendme-send.log")
    logf = open(logp, "w")
    sender = start([exe, "send", name], cwd=sdir, stdout=logf, stderr=subprocess.STDOUT,
                   stdin=subprocess.DEVNULL)
    ticket = None
    end = time.time() + START_DEADLINE * 5
    while ticket is None:
        if sender.poll() is not None or time.time() > end:
            raise RuntimeError(f"sendme send: no ticket ({open(logp).read()[-400:]})")
        m = re.search(r"sendme receive (\S+)", open(logp).read())
        if m:
            ticket = m.group(1)
        time.sleep(0.1)
    try:
        cpu0 = cpu_secs(sender.pid)
        r0 = os.times()
        t0 = time.time()
        recv = subprocess.run([exe, "receive", ticket], cwd=rdir, capture_output=True,
                              text=True, timeout=TRANSFER_DEADLINE, stdin=subprocess.DEVNULL)
        secs = time.time() - t0
        r1 = os.times()
        cpu = cpu_secs(sender.pid) - cpu0 + (r1.children_user - r0.children_user) + \
            (r1.children_system - r0.children_system)
        if recv.returncode != 0:
            raise RuntimeError(f"sendme receive: {recv.stderr.strip()[-400:]}")
        out = os.path.join(rdir, name)
        size = os.path.getsize(src)
        return {
            "version": version,
            "secs": secs,
            "mib_per_sec": size / MIB / secs,
            "cpu_secs_per_gib": cpu / (size / GIB),
            "identical": same_file(src, out),
        }
    finally:
        stop(sender, signal.SIGINT)
        shutil.rmtree(sdir, ignore_errors=True)
        shutil.rmtree(rdir, ignore_errors=True)


# ---------------------------------------------------------------- libtorrent


def lt_settings(lt, port):
    return {
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    }


def lt_session(src_dir, torrent_path, port, peers, seed, q, t0):
    """One libtorrent session in its own process: seeds or downloads, reports completion."""
    import libtorrent as lt
    ses = lt.session(lt_settings(lt, port))
    ti = lt.torrent_info(torrent_path)
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = src_dir
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode
    h = ses.add_torrent(atp)
    for p in peers:
        h.connect_peer(("127.0.0.1", p))
    if seed:
        q.put(("ready", port, 0.0))
        while True:
            time.sleep(1)
    while not h.status().is_seeding:
        time.sleep(0.02)
        if int(time.time()) % 2 == 0:
            for p in peers:
                h.connect_peer(("127.0.0.1", p))
    q.put(("done", port, time.time() - t0.value))
    # Keep uploading to the others until the parent stops this process.
    while True:
        time.sleep(1)


def libtorrent_swarm(work, src, fetchers, port):
    try:
        import libtorrent as lt
    except ImportError:
        return {"skipped": "python3-libtorrent not installed (apt-get install -y python3-libtorrent)"}
    import multiprocessing as mp
    name = os.path.basename(src)
    fs = lt.file_storage()
    lt.add_files(fs, src)
    ct = lt.create_torrent(fs)
    t = time.time()
    lt.set_piece_hashes(ct, os.path.dirname(src))
    hash_secs = time.time() - t
    torrent_path = os.path.join(work, "swarm.torrent")
    with open(torrent_path, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    ports = [port + 1 + k for k in range(fetchers)]
    q = mp.Queue()
    t0 = mp.Value("d", 0.0)
    ctx_procs = []
    seeder = mp.Process(target=lt_session,
                        args=(os.path.dirname(src), torrent_path, port, [], True, q, t0))
    seeder.start()
    ctx_procs.append(seeder)
    q.get(timeout=START_DEADLINE)
    dirs = []
    try:
        cpu0 = cpu_secs(seeder.pid)
        t0.value = time.time()
        for k, p in enumerate(ports):
            d = os.path.join(work, f"lt-{k}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            dirs.append(d)
            others = [port] + [x for x in ports if x != p]
            w = mp.Process(target=lt_session, args=(d, torrent_path, p, others, False, q, t0))
            w.start()
            ctx_procs.append(w)
        done = []
        while len(done) < fetchers:
            kind, _, secs = q.get(timeout=TRANSFER_DEADLINE)
            if kind == "done":
                done.append(secs)
        cpu = sum(cpu_secs(p.pid) for p in ctx_procs) - cpu0
        size = os.path.getsize(src)
        ok = all(same_file(src, os.path.join(d, name)) for d in dirs)
        return {
            "version": lt.__version__,
            "piece_length": ct.piece_length(),
            "hash_secs": hash_secs,
            **swarm_figures(done, size, fetchers, cpu, ok),
        }
    finally:
        for p in ctx_procs:
            p.kill()
            p.join()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- main


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peerlab", default="target/release/peerlab")
    ap.add_argument("--sendme", default=shutil.which("sendme") or "/work/tools/bin/sendme")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--swarm-mib", type=int, default=256)
    ap.add_argument("--fetchers", type=int, default=8)
    ap.add_argument("--base-port", type=int, default=27000)
    ap.add_argument("--work", help="work dir [default: a new temp dir, removed after]")
    ap.add_argument("--only", choices=["p2p", "swarm"])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    exe = os.path.abspath(a.peerlab)
    work = a.work or tempfile.mkdtemp(prefix="peerlab-transfer-")
    os.makedirs(work, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    res = {"load_before": load()}
    try:
        if a.only != "swarm":
            src = os.path.join(work, f"file-{a.size_mib}m.bin")
            make_file(src, a.size_mib * MIB)
            p2p = {"size_mib": a.size_mib}
            log("iperf3")
            p2p["iperf3"] = run_iperf3(a.size_mib * MIB, a.base_port)
            for tr, off in (("quic", 10), ("tcp", 20)):
                log(f"peerlab {tr}")
                p2p[f"peerlab_{tr}"] = peerlab_p2p(exe, work, src, tr, a.base_port + off)
            log("sendme")
            p2p["sendme"] = run_sendme(a.sendme, work, src)
            q, s = p2p["peerlab_quic"], p2p["sendme"]
            p2p["ratios"] = {
                "peerlab_quic_over_sendme_mib_per_sec": ratio(q["mib_per_sec"], s.get("mib_per_sec")),
                "peerlab_quic_over_sendme_cpu_per_gib": ratio(q["cpu_secs_per_gib"], s.get("cpu_secs_per_gib")),
                "peerlab_tcp_over_iperf3_mib_per_sec": ratio(p2p["peerlab_tcp"]["mib_per_sec"], p2p["iperf3"].get("mib_per_sec")),
            }
            res["point_to_point"] = p2p
            os.remove(src)
        if a.only != "p2p":
            src = os.path.join(work, f"swarm-{a.swarm_mib}m.bin")
            make_file(src, a.swarm_mib * MIB)
            sw = {"size_mib": a.swarm_mib, "fetchers": a.fetchers}
            log("peerlab swarm")
            sw["peerlab"] = peerlab_swarm(exe, work, src, a.fetchers, a.base_port + 100)
            log("libtorrent swarm")
            sw["libtorrent"] = libtorrent_swarm(work, src, a.fetchers, a.base_port + 200)
            sw["ratios"] = {
                "peerlab_over_libtorrent_last_secs": ratio(sw["peerlab"]["last_secs"], sw["libtorrent"].get("last_secs")),
                "peerlab_over_libtorrent_cpu_per_gib": ratio(sw["peerlab"]["cpu_secs_per_gib"], sw["libtorrent"].get("cpu_secs_per_gib")),
            }
            res["swarm"] = sw
            os.remove(src)
    finally:
        stop_all()
        res["load_after"] = load()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print_table(res)


def print_table(res):
    def f(v, p=1):
        return "-" if v is None else f"{v:.{p}f}"
    print(f"load before {res['load_before']}, after {res['load_after']}")
    p2p = res.get("point_to_point")
    if p2p:
        print(f"\npoint to point, {p2p['size_mib']} MiB        MiB/s   CPU s/GiB   secs")
        for k in ("iperf3", "peerlab_quic", "peerlab_tcp", "sendme"):
            r = p2p[k]
            if "skipped" in r:
                print(f"{k:<28} skipped: {r['skipped']}")
            else:
                print(f"{k:<28} {f(r['mib_per_sec']):>7} {f(r['cpu_secs_per_gib'], 2):>10} {f(r['secs'], 2):>7}")
        for k, v in p2p["ratios"].items():
            print(f"{k:<44} {f(v, 2)}")
    sw = res.get("swarm")
    if sw:
        print(f"\n1 seeder + {sw['fetchers']} fetchers, {sw['size_mib']} MiB   last s   CPU s/GiB   completions")
        for k in ("peerlab", "libtorrent"):
            r = sw[k]
            if "skipped" in r:
                print(f"{k:<28} skipped: {r['skipped']}")
            else:
                c = " ".join(f(x, 2) for x in r["completion_secs"])
                print(f"{k:<28} {f(r['last_secs'], 2):>7} {f(r['cpu_secs_per_gib'], 2):>10}   {c}")
        for k, v in sw["ratios"].items():
            print(f"{k:<44} {f(v, 2)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
