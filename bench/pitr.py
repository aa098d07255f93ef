#!/usr/bin/env python3
"""Point-in-time recovery: the numbers the oplog capture is held to.

Against SecantusDB (a one-member replica set, started here; the same
server the tests use), with the release binary:

1. Data at risk: a steady writer, the daemon capturing; `kill -9` of the
   daemon at a random moment. What cofre holds on disk (the spool and the
   slices) against the newest operation on the server then: the seconds
   of writes a dead host would take with it (goal <= 5 s).
2. Replay speed on the same slices: cofre's `restore --at latest` against
   applying the entries one command per entry (what `applyOps`-per-entry
   replays do), and against the server's bulk-insert floor (`insert_many`
   of the same documents in batches of 1000). Goals: >= 10x the per-entry
   replay, <= 1.2x the floor on an insert-heavy history.
3. The daemon while capturing 1,000 writes/s for 30 s: CPU (of one core)
   and peak RSS (goals: <= 5%, <= 48 MiB).

    python3 bench/pitr.py
"""
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402

VENV = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "cofre-test",
                    "secantusdb-0.7.0b3")


def venv():
    if not os.path.exists(os.path.join(VENV, "bin", "secantusd-py")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "secantusdb==0.7.0b3"], check=True)
    return os.path.join(VENV, "bin")


def py(code, *args):
    """Runs `code` with the venv's Python (pymongo, bson); returns stdout."""
    r = subprocess.run([os.path.join(venv(), "python"), "-c", code, *args], check=True,
                       stdout=subprocess.PIPE, text=True)
    return r.stdout


class Server:
    def __init__(self, flags=()):
        self.port = base.free_port()
        self.proc = subprocess.Popen([os.path.join(venv(), "secantusd-py"), "--host", "127.0.0.1", "--port",
                                      str(self.port), "--storage-path", ":memory:", *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base.wait_for_port(self.port)

    def uri(self, db=""):
        return f"mongodb://127.0.0.1:{self.port}/{db}?directConnection=true"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Project:
    def __init__(self, work, server, cofre):
        self.work = work
        self.cofre = cofre
        os.makedirs(os.path.join(work, "app"), exist_ok=True)
        with open(os.path.join(work, "app", "a.txt"), "w") as f:
            f.write("a\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
        self.env.update({"HOME": os.path.join(work, "home"), "BACKUP_SOURCE": os.path.join(work, "app"),
                         "MONGODB_URI": server.uri("app"), "BACKUP_OPLOG_SLICE": "5s"})
        self.backups = os.path.join(work, "app", "backups")

    def run(self, *args, check=True):
        return subprocess.run([self.cofre, *args], env=self.env, check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def daemon(self):
        return subprocess.Popen([self.cofre, "daemon"], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)


WRITER = r"""
import pymongo, sys, time
c = pymongo.MongoClient(sys.argv[1])
coll = c.app.events
rate, seconds, start = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
batch = max(1, rate // 100)
i = start
end = time.time() + seconds
while time.time() < end:
    t = time.time()
    coll.insert_many([{"_id": i + k, "n": i + k, "pad": "x" * 200} for k in range(batch)], ordered=True)
    i += batch
    time.sleep(max(0, 0.01 - (time.time() - t)))
print(i)
"""


def spool_last_ts(path):
    """The last entry's timestamp seconds in the spool (its frames)."""
    if not os.path.exists(path):
        return None
    data = open(path, "rb").read()
    pos = len(b"COFRE-OPLOG-SPOOL1\n") + 8 + 32
    last = None
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n + 32 > len(data):
            break
        doc = data[pos + 4:pos + 4 + n]
        # `ts` is a BSON timestamp (type 0x11): increment then seconds.
        at = doc.find(b"\x11ts\x00")
        if at >= 0:
            last = struct.unpack_from("<I", doc, at + 8)[0]
        pos += 4 + n + 32
    return last


def slices_until(oplog_dir):
    best = None
    for name in os.listdir(oplog_dir) if os.path.isdir(oplog_dir) else []:
        if name.endswith(".minisig"):
            for line in open(os.path.join(oplog_dir, name)):
                for field in line.strip().split("\t"):
                    if field.startswith("oplog_until:"):
                        t = int(field.split(":", 1)[1].split(",")[0])
                        best = t if best is None else max(best, t)
    return best


def newest_op(server):
    return int(py("import pymongo,sys; c=pymongo.MongoClient(sys.argv[1]);"
                  "print(c.local['oplog.rs'].find_one(sort=[('$natural',-1)])['ts'].time)", server.uri()).strip())


def data_at_risk(cofre, work, runs=3):
    out = []
    for r in range(runs):
        server = Server()
        p = Project(os.path.join(work, f"risk{r}"), server, cofre)
        p.run("backup")
        d = p.daemon()
        time.sleep(2)
        writer = subprocess.Popen([os.path.join(venv(), "python"), "-c", WRITER, server.uri(), "300", "30", "0"],
                                  stdout=subprocess.PIPE)
        time.sleep(4 + random.random() * 6)
        os.kill(d.pid, signal.SIGKILL)
        newest = newest_op(server)
        d.wait()
        writer.kill()
        oplog = os.path.join(p.backups, "oplog")
        held = max(x for x in (spool_last_ts(os.path.join(oplog, "spool")), slices_until(oplog)) if x is not None)
        out.append(newest - held)
        server.stop()
    return out


def replay(cofre, work, entries):
    """Captures `entries` inserts (and a tenth as many updates), then
    times cofre's replay, the per-entry replay and the bulk floor."""
    server = Server()
    p = Project(os.path.join(work, "replay"), server, cofre)
    p.run("backup")
    d = p.daemon()
    time.sleep(2)
    py(r"""
import pymongo, sys
c = pymongo.MongoClient(sys.argv[1]); coll = c.app.events
n = int(sys.argv[2])
for s in range(0, n, 1000):
    coll.insert_many([{"_id": i, "n": i, "pad": "x" * 200} for i in range(s, min(n, s + 1000))])
""", server.uri(), str(entries))
    time.sleep(7)
    d.send_signal(signal.SIGTERM)
    d.wait()
    # cofre: base (empty) then the slices.
    t = time.time()
    p.run("restore", "--at", "latest", "--mongo-only", "--db-prefix", "cofre_")
    cofre_s = time.time() - t
    # The same entries, decrypted with age and zstd, one command each.
    oplog = os.path.join(p.backups, "oplog")
    bson = os.path.join(work, "oplog.bson")
    ident = os.path.join(p.work, "home", ".config", "cofre", "identity.txt")
    subprocess.run(f"for f in {oplog}/oplog_*.age; do age -d -i {ident} \"$f\" | zstd -q -d; done > {bson}",
                   shell=True, check=True)
    per_entry = float(py(r"""
import bson, pymongo, sys, time
c = pymongo.MongoClient(sys.argv[1]); db = c.per_entry
docs = bson.decode_all(open(sys.argv[2], 'rb').read())
t = time.time()
for e in docs:
    if e.get('ns') != 'app.events': continue
    if e['op'] == 'i': db.events.insert_one(e['o'])
    elif e['op'] == 'u': db.events.update_one(e['o2'], {'$set': e['o']} if '$v' not in e['o'] else {'$set': e['o']['diff'].get('updatedFields', {})})
    elif e['op'] == 'd': db.events.delete_one(e['o'])
print(time.time() - t)
""", server.uri(), bson))
    floor = float(py(r"""
import bson, pymongo, sys, time
c = pymongo.MongoClient(sys.argv[1]); db = c.floor
docs = [e['o'] for e in bson.decode_all(open(sys.argv[2], 'rb').read()) if e.get('ns') == 'app.events' and e['op'] == 'i']
t = time.time()
for s in range(0, len(docs), 1000):
    db.events.insert_many(docs[s:s + 1000], ordered=True)
print(time.time() - t)
""", server.uri(), bson))
    server.stop()
    return cofre_s, per_entry, floor


def capture_cost(cofre, work, seconds=30, rate=1000):
    server = Server()
    p = Project(os.path.join(work, "cost"), server, cofre)
    p.run("backup")
    d = p.daemon()
    time.sleep(2)
    clk = os.sysconf("SC_CLK_TCK")

    def cpu():
        fields = open(f"/proc/{d.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clk

    c0, t0 = cpu(), time.time()
    out = py(WRITER, server.uri(), str(rate), str(seconds), "0")
    c1, t1 = cpu(), time.time()
    hwm = [l for l in open(f"/proc/{d.pid}/status") if l.startswith("VmHWM")][0].split()[1]
    d.send_signal(signal.SIGTERM)
    d.wait()
    server.stop()
    written = int(out.strip())
    return (c1 - c0) / (t1 - t0), int(hwm) / 1024, written / (t1 - t0)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=base.REPO, check=True)
    cofre = os.path.join(base.REPO, "target", "release", "cofre")
    work = tempfile.mkdtemp(prefix="cofre-pitr-bench-")
    try:
        risk = data_at_risk(cofre, work)
        cofre_s, per_entry, floor = replay(cofre, work, 50_000)
        cpu, rss, rate = capture_cost(cofre, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = lambda c: "✓" if c else "✗"
    print()
    print("| measure | cofre | goal |")
    print("| --- | --- | --- |")
    print(f"| data at risk after kill -9 (3 runs, s) | {', '.join(str(r) for r in risk)} | ≤ 5 s {ok(max(risk) <= 5)} |")
    print(f"| replay of 50,000 inserts | {cofre_s:.2f} s | |")
    print(f"| one command per entry, same slices | {per_entry:.2f} s ({per_entry / cofre_s:.1f}× cofre's time) | ≥ 10× {ok(per_entry / cofre_s >= 10)} |")
    print(f"| bulk-insert floor (insert_many, 1000) | {floor:.2f} s (cofre {cofre_s / floor:.2f}× it) | ≤ 1.2× {ok(cofre_s / floor <= 1.2)} |")
    print(f"| daemon capturing {rate:.0f} writes/s | {cpu * 100:.1f}% of one core, peak RSS {rss:.0f} MiB | ≤ 5%, ≤ 48 MiB {ok(cpu <= 0.05 and rss <= 48)} |")


if __name__ == "__main__":
    main()
