#!/usr/bin/env python3
"""What monitoring costs a backup: `cofre backup` of the medium tree with no
notification target, with every event sent to a webhook and a
Healthchecks-style check (an HTTP server on loopback that answers at once),
and with a target that is down (nothing listens: three attempts, then a
warning). Interleaved, median of several runs. Then the daemon's /metrics:
the time of one scrape, median of 200.

    python3 bench/notify.py            # 5 runs
    python3 bench/notify.py --runs 9
"""
import argparse
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import free_port, make_tree, sh, warm  # noqa: E402


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sh(f"cd {REPO} && cargo build --release --quiet")
    cofre = os.path.join(REPO, "target", "release", "cofre")
    work = os.path.join(HERE, "out")
    os.makedirs(work, exist_ok=True)
    tree = os.path.join(work, "tree-medium")
    make_tree(tree, "medium")
    warm(tree)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    down = free_port()
    tmp = tempfile.mkdtemp(prefix="cofre-notify-bench-", dir=work)
    base = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_") and k != "MONGODB_URI"}
    # The tree's .env names a MongoDB that is not there: the empty variable turns it off.
    base.update({"HOME": os.path.join(tmp, "home"), "BACKUP_SOURCE": tree, "BACKUP_RETENTION_DAYS": "0",
                 "MONGODB_URI": ""})
    cases = {
        "no notification": {},
        "every event to a webhook and a check": {
            "BACKUP_NOTIFY_URL": f"http://127.0.0.1:{port}/hook,hc+http://127.0.0.1:{port}/ping/x",
            "BACKUP_NOTIFY_ON": "all",
        },
        "success to a target that is down": {
            "BACKUP_NOTIFY_URL": f"http://127.0.0.1:{down}/hook",
            "BACKUP_NOTIFY_ON": "success",
        },
    }
    times = {name: [] for name in cases}
    for i in range(args.runs):
        for name, extra in cases.items():
            env = dict(base, BACKUP_DIR=os.path.join(tmp, f"out-{len(times[name])}-{i}"), **extra)
            t = time.perf_counter()
            subprocess.run([cofre, "backup", "-q"], env=env, check=True, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
            sh(f"rm -rf {env['BACKUP_DIR']}")

    # The daemon's /metrics.
    mport = free_port()
    env = dict(base, BACKUP_DIR=os.path.join(tmp, "daemon"), BACKUP_SCHEDULE="0 0 1 1 *",
               BACKUP_METRICS_ADDR=f"127.0.0.1:{mport}")
    subprocess.run([cofre, "backup", "-q"], env=env, check=True)
    daemon = subprocess.Popen([cofre, "daemon"], env=env, stderr=subprocess.DEVNULL)
    scrapes = []
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(200):
            t = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
            scrapes.append(time.perf_counter() - t)
    finally:
        daemon.terminate()
        daemon.wait()
        server.shutdown()
        sh(f"rm -rf {tmp}")

    print(f"Machine: {os.cpu_count()} cores; medium tree; interleaved, median of {args.runs} runs\n")
    print("| cofre backup | wall | over none |")
    print("| --- | --- | --- |")
    ref = statistics.median(times["no notification"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.2f} s | {m - ref:+.2f} s |")
    print(f"\nGET /metrics from the daemon: median {statistics.median(scrapes) * 1000:.1f} ms, "
          f"max {max(scrapes) * 1000:.1f} ms over {len(scrapes)} scrapes ({len(body)} bytes)")


if __name__ == "__main__":
    main()
