#!/usr/bin/env python3
"""cofre's benchmark: cofre side by side with the tools a user would pick
instead (GNU tar, gzip, pigz, zstd, age, restic), interleaved, several runs.

For each command it prints the median wall time, the output size, the peak
RSS (from /usr/bin/time, as `time -v` reports it) and the ratio to the
reference the target is stated against. Tools that are not installed are
left out. Outputs (archives, restored trees) go to a tmpfs when run as root,
so the disk's write-back does not add noise; the source tree is read from
the page cache (one warm-up read first).

    python3 bench/run.py                      # medium tree, 3 runs
    python3 bench/run.py --runs 5 --small-files 200000 --large --levels
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_TREE = os.path.join(REPO, "..", "shared", "bench", "make-project-tree.sh")
EXCLUDES = ["--exclude=node_modules", "--exclude=.git", "--exclude=logs", "--exclude=./backups",
            "--exclude=.env", "--exclude=.env.*"]
TIME = "/usr/bin/time"


def have(tool):
    return shutil.which(tool) is not None


def sh(cmd, env=None, check=True):
    return subprocess.run(cmd, shell=True, env=env, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port():
    """A TCP port nothing listens on, for a server the benchmark starts."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_port(port, tries=300):
    """Waits (0.1 s a try) until something accepts connections on `port`."""
    import socket
    import time
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)


def timed(cmd, env=None):
    """Runs a shell command under /usr/bin/time; returns (seconds, peak KiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        full = f"{TIME} -f '%e %M' -o {t.name} sh -c {shlex_quote(cmd)}"
        r = subprocess.run(full, shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SystemExit(f"command failed ({r.returncode}): {cmd}\n{r.stderr[-2000:]}")
        wall, rss = t.read().split()[-2:]
        return float(wall), int(rss)


def shlex_quote(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


def size_of(path):
    if os.path.isdir(path):
        total = 0
        for root, _, files in os.walk(path):
            for f in files:
                total += os.lstat(os.path.join(root, f)).st_size
        return total
    return os.path.getsize(path) if os.path.exists(path) else 0


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def make_tree(dest, kind):
    if os.path.isdir(dest) and os.listdir(dest):
        return
    if kind in ("small", "medium", "large") and os.path.exists(SHARED_TREE):
        sh(f"bash {SHARED_TREE} {dest} {kind}")
    else:
        sh(f"python3 {HERE}/gen_tree.py {dest} {kind}")


def warm(tree):
    sh(f"tar -C {tree} -cf /dev/null .", check=False)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)
        self.ram = os.path.join(self.work, "ram")
        os.makedirs(self.ram, exist_ok=True)
        self.mounted = False
        if not args.no_tmpfs and os.geteuid() == 0:
            if sh(f"mountpoint -q {self.ram}", check=False).returncode != 0:
                self.mounted = sh(f"mount -t tmpfs -o size=12g tmpfs {self.ram}", check=False).returncode == 0
            else:
                self.mounted = True
        self.cofre = os.path.join(REPO, "target", "release", "cofre")
        self.results = {}

    def close(self):
        if self.mounted:
            sh(f"umount {self.ram}", check=False)

    def keys(self):
        key = os.path.join(self.work, "key.txt")
        if not os.path.exists(key):
            sh(f"{self.cofre} keygen -o {key}")
        with open(key) as f:
            pub = [l.split(": ", 1)[1].strip() for l in f if l.startswith("# public key: ")][0]
        return key, pub

    def record(self, name, wall, rss, out_bytes):
        self.results.setdefault(name, []).append((wall, rss, out_bytes))

    def median(self, name):
        rows = self.results.get(name)
        if not rows:
            return None
        return (statistics.median(r[0] for r in rows), max(r[1] for r in rows), statistics.median(r[2] for r in rows))

    def cofre_env(self, tree, out_dir, pub):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("BACKUP_") or k == "MONGODB_URI":
                del env[k]
        env.update({"HOME": os.path.join(self.work, "home"), "BACKUP_SOURCE": tree, "BACKUP_DIR": out_dir,
                    "BACKUP_RECIPIENTS": pub, "MONGODB_URI": ""})
        return env

    def run_main(self, tree):
        key, pub = self.keys()
        ram = self.ram
        ex = " ".join(EXCLUDES)
        cofre_out = os.path.join(ram, "cofre-out")
        backups = [
            ("tar -cf (I/O floor)", f"tar -C {tree} {ex} -cf {ram}/ref.tar .", f"{ram}/ref.tar", None),
            ("tar -czf | age", f"tar -C {tree} {ex} -czf - . | age -r {pub} > {ram}/ref.tgz.age", f"{ram}/ref.tgz.age", "age"),
            ("tar -cf | pigz -p2", f"tar -C {tree} {ex} -cf - . | pigz -p2 > {ram}/ref.pigz.gz", f"{ram}/ref.pigz.gz", "pigz"),
            ("tar -cf | zstd -3 -T2", f"tar -C {tree} {ex} -cf - . | zstd -q -3 -T2 > {ram}/ref.tar.zst", f"{ram}/ref.tar.zst", "zstd"),
            ("restic backup (first)", f"rm -rf {ram}/restic && restic -q -r {ram}/restic init && restic -q -r {ram}/restic backup "
             f"--exclude node_modules --exclude .git --exclude logs --exclude {tree}/backups --exclude .env {tree}", f"{ram}/restic", "restic"),
            ("cofre backup (gzip+age)", f"rm -rf {cofre_out} && {self.cofre} backup -q --no-prune", cofre_out, None),
            ("cofre backup (zstd+age)", f"rm -rf {cofre_out}-z && BACKUP_DIR={cofre_out}-z {self.cofre} backup -q --no-prune --compression zstd",
             f"{cofre_out}-z", None),
        ]
        restores = [
            ("age -d | tar -xzf", f"mkdir -p {ram}/r && age -d -i {key} {ram}/ref.tgz.age | tar -C {ram}/r -xzf -", "age"),
            ("zstd -d | tar -xf", f"mkdir -p {ram}/r && zstd -q -d -c {ram}/ref.tar.zst | tar -C {ram}/r -xf -", "zstd"),
            ("restic restore", f"restic -q -r {ram}/restic restore latest --target {ram}/r", "restic"),
            ("cofre restore (gzip+age)", f"{self.cofre} restore latest --to {ram}/r -i {key} -q", None),
            ("cofre restore (zstd+age)", f"BACKUP_DIR={cofre_out}-z {self.cofre} restore latest --to {ram}/r -i {key} -q", None),
        ]
        env = self.cofre_env(tree, cofre_out, pub)
        env["RESTIC_PASSWORD"] = "bench"
        warm(tree)
        for run in range(self.args.runs):
            print(f"run {run + 1}/{self.args.runs}", file=sys.stderr)
            for name, cmd, out, tool in backups:
                if tool and not have(tool):
                    continue
                if not out.endswith("cofre-out") and not out.endswith("-z") and not out.endswith("restic"):
                    rm(out)
                wall, rss = timed(cmd, env)
                self.record(name, wall, rss, size_of(out))
            for name, cmd, tool in restores:
                if tool and not have(tool):
                    continue
                rm(f"{ram}/r")
                wall, rss = timed(cmd, env)
                self.record(name, wall, rss, 0)
                rm(f"{ram}/r")

    def run_small_files(self, n):
        tree = os.path.join(self.work, f"tree-files-{n}")
        make_tree(tree, f"files:{n}")
        tree = os.path.realpath(tree)
        warm(tree)
        _, pub = self.keys()
        out = os.path.join(self.ram, "small-out")
        env = self.cofre_env(tree, out, pub)
        for _ in range(self.args.runs):
            rm(f"{self.ram}/small.tgz")
            wall, rss = timed(f"tar -C {tree} -czf {self.ram}/small.tgz .", env)
            self.record(f"tar -czf ({n} small files)", wall, rss, size_of(f"{self.ram}/small.tgz"))
            rm(out)
            wall, rss = timed(f"{self.cofre} backup -q --no-prune", env)
            self.record(f"cofre backup ({n} small files)", wall, rss, size_of(out))
        rm(out)

    def run_large(self):
        tree = os.path.join(self.work, "tree-large")
        make_tree(tree, "large")
        warm(tree)
        key, pub = self.keys()
        out = os.path.join(self.ram, "large-out")
        env = self.cofre_env(tree, out, pub)
        rm(out)
        wall, rss = timed(f"{self.cofre} backup -q --no-prune", env)
        self.record("cofre backup, large tree", wall, rss, size_of(out))
        rm(f"{self.ram}/r")
        wall, rss = timed(f"{self.cofre} restore latest --to {self.ram}/r -i {key} -q", env)
        self.record("cofre restore, large tree", wall, rss, size_of(f"{self.ram}/r"))
        rm(f"{self.ram}/r")
        rm(out)

    def run_levels(self, tree):
        _, pub = self.keys()
        out = os.path.join(self.ram, "level-out")
        env = self.cofre_env(tree, out, pub)
        for level in ["gzip:1", "gzip:4", "gzip:6", "gzip:9", "zstd:1", "zstd:3", "zstd:9", "zstd:19"]:
            rm(out)
            wall, rss = timed(f"{self.cofre} backup -q --no-prune --compression {level}", env)
            self.record(f"cofre --compression {level}", wall, rss, size_of(out))
        rm(out)

    def report(self, tree_bytes):
        def row(name, ref=None, target=None, size_ref=None, size_target=None):
            m = self.median(name)
            if m is None:
                return
            wall, rss, out = m
            ratio = ""
            if ref and self.median(ref):
                r = wall / self.median(ref)[0]
                ok = "" if target is None else (" ✓" if r <= target else f" ✗ (target {target}×)")
                ratio = f"{r:.2f}× {ref}{ok}"
            size = f"{out / 1e6:.1f} MB" if out else ""
            if size_ref and self.median(size_ref) and out:
                s = out / self.median(size_ref)[2]
                ok = "" if size_target is None else (" ✓" if s <= size_target else f" ✗ (target {size_target}×)")
                size += f" ({s:.3f}× {size_ref}{ok})"
            cell = lambda text: text.replace("|", "\\|")
            print(f"| {cell(name)} | {wall:.2f} s | {cell(size)} | {rss / 1024:.0f} MiB | {cell(ratio)} |")

        print()
        print(f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Linux {platform.release()}; "
              f"outputs on {'tmpfs' if self.mounted else 'disk'}; median of {self.args.runs} runs; "
              f"source tree {tree_bytes / 1e6:.0f} MB included.")
        print()
        print("| command | wall | output | peak RSS | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for name in ["tar -cf (I/O floor)", "tar -czf | age", "tar -cf | pigz -p2", "tar -cf | zstd -3 -T2", "restic backup (first)"]:
            row(name)
        row("cofre backup (gzip+age)", "tar -czf | age", 0.25, "tar -czf | age", 1.02)
        row("cofre backup (zstd+age)", "tar -cf (I/O floor)", 1.5, "tar -cf | zstd -3 -T2", 1.05)
        for name in ["age -d | tar -xzf", "zstd -d | tar -xf", "restic restore"]:
            row(name)
        row("cofre restore (gzip+age)", "age -d | tar -xzf", 1.0)
        row("cofre restore (zstd+age)", "zstd -d | tar -xf", 1.0)
        for name in sorted(self.results):
            if "small files" in name and name.startswith("tar"):
                row(name)
                row(name.replace("tar -czf", "cofre backup"), name, 0.5)
        for name in ["cofre backup, large tree", "cofre restore, large tree"]:
            m = self.median(name)
            if m:
                ok = "✓" if m[1] <= 64 * 1024 else "✗"
                print(f"| {name} | {m[0]:.2f} s | {m[2] / 1e6:.1f} MB | {m[1] / 1024:.0f} MiB ({ok} target 64 MiB) | |")
        levels = [n for n in self.results if n.startswith("cofre --compression")]
        if levels:
            print()
            print("| level | wall | output |")
            print("| --- | --- | --- |")
            for n in levels:
                wall, _, out = self.median(n)
                print(f"| {n.split()[-1]} | {wall:.2f} s | {out / 1e6:.1f} MB |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tree", default="medium", choices=["small", "medium", "large"])
    p.add_argument("--work", default=os.path.join(HERE, "out"), help="where trees and outputs go (default bench/out)")
    p.add_argument("--small-files", type=int, default=0, metavar="N", help="also back up N files of 1 KiB against tar -czf")
    p.add_argument("--large", action="store_true", help="also measure peak RSS on the large tree")
    p.add_argument("--levels", action="store_true", help="also measure compression levels")
    p.add_argument("--no-tmpfs", action="store_true", help="write outputs to disk even as root")
    args = p.parse_args()
    if not os.path.exists(TIME):
        raise SystemExit("/usr/bin/time is needed (Debian package: time)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    b = Bench(args)
    try:
        tree = os.path.join(b.work, f"tree-{args.tree}")
        make_tree(tree, args.tree)
        tree = os.path.realpath(tree)
        included = sh(f"tar -C {tree} {' '.join(EXCLUDES)} -cf - . | wc -c").stdout.strip()
        b.run_main(tree)
        if args.small_files:
            b.run_small_files(args.small_files)
        if args.large:
            b.run_large()
        if args.levels:
            b.run_levels(tree)
        b.report(int(included))
    finally:
        b.close()


if __name__ == "__main__":
    main()
