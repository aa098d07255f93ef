#!/usr/bin/env python3
"""Differential archives against restic and borg, side by side in one run.

On a copy of the medium bench tree, with the same excludes for every tool:

1. Day 1: a first backup with each tool (cofre writes a full).
2. Day 2: change 1% of the files, add 8 MB of uploads, delete 20 files,
   back up again (cofre writes a differential), and restore the newest.
   Prints the bytes each tool stored that day, the time it took, and the
   restore's time; the goals are cofre's day-2 bytes <= 3x the best peer's
   and its day-2 time <= the best peer's.
3. A quiet day (nothing changed): cofre's backup time (goal <= 1 s: no
   unchanged file is read).
4. Restoring the day-2 differential against restoring a full archive of
   the same tree (goal <= 1.3x).
5. With --days N (default 30): N days of the same daily change, cofre with
   a full every 7 days (the default BACKUP_FULL_EVERY), against N daily
   fulls; restic's and borg's repositories beside. Bytes stored and bytes
   uploaded (each archive goes up once, with its signature; the index
   stays home) against N daily fulls (goal <= 0.35x).

    python3 bench/chain.py              # all of it (about 10 minutes)
    python3 bench/chain.py --days 0     # day 2 and the quiet day only

restic and borg come from Debian (`apt-get install restic borgbackup`); the
script installs them when it can and leaves a missing one out otherwise.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402  (the shared helpers of bench/run.py)

EXCLUDE_ARGS = ["node_modules", ".git", "logs", ".env"]


def dir_bytes(path):
    return base.size_of(path) if os.path.exists(path) else 0


def install_peers():
    missing = [pkg for tool, pkg in (("restic", "restic"), ("borg", "borgbackup")) if not base.have(tool)]
    if missing and os.geteuid() == 0 and base.have("apt-get"):
        base.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q " + " ".join(missing), check=False)


class Change:
    """The daily change: 1% of the files rewritten (same name, new bytes),
    8 MB of new uploads, 20 files deleted. Seeded, so every tool sees the
    same trees."""

    def __init__(self, tree, seed):
        self.tree = tree
        self.rng = random.Random(seed)

    def files(self):
        out = []
        for root, dirs, names in os.walk(self.tree):
            rel = os.path.relpath(root, self.tree)
            parts = rel.split(os.sep)
            if any(p in ("node_modules", ".git", "logs", "backups") for p in parts):
                dirs[:] = []
                continue
            dirs[:] = [d for d in dirs if d not in ("node_modules", ".git", "logs", "backups")]
            for n in names:
                p = os.path.join(root, n)
                if os.path.isfile(p) and not os.path.islink(p) and not n.startswith(".env"):
                    out.append(p)
        out.sort()
        return out

    def apply(self, day):
        files = self.files()
        changed = self.rng.sample(files, max(1, len(files) // 100))
        for p in changed:
            size = os.path.getsize(p)
            with open(p, "r+b") as f:
                # A few KiB of new bytes somewhere in the file, as an edit.
                at = self.rng.randrange(0, max(1, size))
                f.seek(at)
                f.write(self.rng.randbytes(min(4096, max(1, size - at))))
        uploads = os.path.join(self.tree, "public", "uploads", f"day{day:02d}")
        os.makedirs(uploads, exist_ok=True)
        for i in range(8):
            with open(os.path.join(uploads, f"upload{i}.jpg"), "wb") as f:
                f.write(self.rng.randbytes(1 << 20))
        left = [p for p in files if p not in changed]
        for p in self.rng.sample(left, 20):
            os.remove(p)


class Peers:
    """restic, borg and cofre on one tree, each with its own repository."""

    def __init__(self, work, tree, cofre, pub, key):
        self.work, self.tree, self.cofre, self.key = work, tree, cofre, key
        self.restic = os.path.join(work, "restic") if base.have("restic") else None
        self.borg = os.path.join(work, "borg") if base.have("borg") else None
        self.out = os.path.join(work, "cofre")
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("BACKUP_") or k == "MONGODB_URI":
                del self.env[k]
        self.env.update({
            "HOME": os.path.join(work, "home"), "BACKUP_SOURCE": tree, "BACKUP_DIR": self.out,
            "BACKUP_RECIPIENTS": pub, "MONGODB_URI": "", "RESTIC_PASSWORD": "bench",
            "BORG_PASSPHRASE": "bench", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_BASE_DIR": os.path.join(work, "borg-home"),
        })
        ex = " ".join(f"--exclude {e}" for e in EXCLUDE_ARGS)
        self.restic_ex = f"{ex} --exclude {tree}/backups"
        self.borg_ex = " ".join(f"--exclude 'sh:**/{e}'" for e in EXCLUDE_ARGS) + f" --exclude {tree}/backups"
        self.day = 0

    def init(self):
        for d in (self.restic, self.borg, self.out):
            if d:
                base.rm(d)
        if self.restic:
            base.sh(f"restic -q -r {self.restic} init", env=self.env)
        if self.borg:
            # repokey-blake2: encrypted, as cofre's archives are.
            base.sh(f"borg init -e repokey-blake2 {self.borg}", env=self.env)

    def backup(self, cofre_args=""):
        """One backup with each tool: {tool: (seconds, bytes added)}."""
        self.day += 1
        got = {}
        if self.restic:
            before = dir_bytes(self.restic)
            wall, _ = base.timed(f"restic -q -r {self.restic} backup {self.restic_ex} {self.tree}", self.env)
            got["restic"] = (wall, dir_bytes(self.restic) - before)
        if self.borg:
            before = dir_bytes(self.borg)
            wall, _ = base.timed(f"cd {self.tree} && borg create --compression lz4 {self.borg_ex} "
                                 f"{self.borg}::day{self.day:03d} .", self.env)
            got["borg"] = (wall, dir_bytes(self.borg) - before)
        before = self.cofre_bytes()
        wall, _ = base.timed(f"{self.cofre} backup -q --no-prune {cofre_args}", self.env)
        got["cofre"] = (wall, self.cofre_bytes() - before)
        return got

    def cofre_bytes(self, uploaded=False):
        """What cofre keeps in BACKUP_DIR (archives, signatures, indexes),
        or what it uploads (archives and signatures)."""
        if not os.path.isdir(self.out):
            return 0
        total = 0
        for n in os.listdir(self.out):
            if not n.startswith("backup_"):
                continue
            if uploaded and (n.endswith(".index") or n.endswith(".index.minisig")):
                continue
            total += os.path.getsize(os.path.join(self.out, n))
        return total

    def restore(self, into):
        got = {}
        if self.restic:
            base.rm(into)
            wall, _ = base.timed(f"restic -q -r {self.restic} restore latest --target {into}", self.env)
            got["restic"] = wall
        if self.borg:
            base.rm(into)
            os.makedirs(into)
            last = base.sh(f"borg list --last 1 --short {self.borg}", env=self.env).stdout.strip()
            wall, _ = base.timed(f"cd {into} && borg extract {self.borg}::{last}", self.env)
            got["borg"] = wall
        base.rm(into)
        wall, _ = base.timed(f"{self.cofre} restore latest --to {into} -i {self.key} -q", self.env)
        got["cofre"] = wall
        base.rm(into)
        return got


def ratio_line(what, mine, best_name, best, goal):
    r = mine / best if best else float("inf")
    ok = "✓" if r <= goal else f"✗ (goal {goal}×)"
    return f"{what}: {r:.2f}× {best_name} {ok}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(base.HERE, "out"), help="where trees and repositories go")
    p.add_argument("--days", type=int, default=30, help="days of the simulation (0: none)")
    args = p.parse_args()
    install_peers()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=base.REPO, check=True)
    b = base.Bench(argparse.Namespace(work=args.work, no_tmpfs=False, runs=1))
    try:
        run(b, args)
    finally:
        b.close()


def run(b, args):
    key, pub = b.keys()
    source = os.path.join(b.work, "tree-medium")
    base.make_tree(source, "medium")
    work = os.path.join(b.ram, "chain")
    base.rm(work)
    os.makedirs(work)
    tree = os.path.join(work, "tree")
    base.sh(f"cp -a {source} {tree}")
    tree = os.path.realpath(tree)
    base.warm(tree)
    # The tree was just copied: its files changed a moment ago, and a full
    # made now would hash them all again the next day. A real tree has
    # been still for longer than the two seconds that matter.
    base.sh("sleep 3")
    peers = Peers(work, tree, b.cofre, pub, key)
    peers.init()
    change = Change(tree, 2026)

    day1 = peers.backup()
    change.apply(2)
    base.warm(tree)
    day2 = peers.backup()
    restores = peers.restore(os.path.join(work, "r"))
    quiet, _ = base.timed(f"{b.cofre} backup -q --no-prune", peers.env)
    # The same day-2 tree as one full archive, restored.
    full_env = dict(peers.env, BACKUP_DIR=os.path.join(work, "cofre-full"))
    base.timed(f"{b.cofre} backup -q --no-prune --full", full_env)
    into = os.path.join(work, "r")
    base.rm(into)
    full_restore, _ = base.timed(f"{b.cofre} restore latest --to {into} -i {key} -q", full_env)
    base.rm(into)
    # The differential restore again, now that the quiet day came after it
    # (`latest` is the quiet day's: also a differential of the same full).
    diff_restore, _ = base.timed(f"{b.cofre} restore latest --to {into} -i {key} -q", peers.env)
    base.rm(into)

    print()
    print("Day 1 and day 2 (1% of files changed, 8 MB of uploads added, 20 files deleted):")
    print()
    print("| tool | day 1 | day 1 stored | day 2 | day 2 stored | restore newest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tool in ("restic", "borg", "cofre"):
        if tool not in day2:
            continue
        print(f"| {tool} | {day1[tool][0]:.2f} s | {day1[tool][1] / 1e6:.1f} MB | {day2[tool][0]:.2f} s | "
              f"{day2[tool][1] / 1e6:.1f} MB | {restores[tool]:.2f} s |")
    peers_only = [t for t in day2 if t != "cofre"]
    if peers_only:
        best_bytes = min(peers_only, key=lambda t: day2[t][1])
        best_time = min(peers_only, key=lambda t: day2[t][0])
        best_day1 = min(peers_only, key=lambda t: day1[t][0])
        best_restore = min(peers_only, key=lambda t: restores[t])
        print()
        print("- " + ratio_line("day-2 bytes", day2["cofre"][1], best_bytes, day2[best_bytes][1], 3.0))
        print("- " + ratio_line("day-2 time", day2["cofre"][0], best_time, day2[best_time][0], 1.0))
        print("- " + ratio_line("day-1 time", day1["cofre"][0], best_day1, day1[best_day1][0], 1.0))
        print("- " + ratio_line("restore time", restores["cofre"], best_restore, restores[best_restore], 1.0))
    print(f"- quiet day (nothing changed): {quiet:.2f} s {'✓' if quiet <= 1.0 else '✗ (goal 1 s)'}")
    print("- " + ratio_line("restoring a differential", diff_restore, "restoring a full of the same tree",
                            full_restore, 1.3))

    if args.days <= 0:
        return
    simulate(b, args.days, source, work, key, pub)


def simulate(b, days, source, work, key, pub):
    tree = os.path.join(work, "sim-tree")
    base.rm(tree)
    base.sh(f"cp -a {source} {tree}")
    tree = os.path.realpath(tree)
    base.sh("sleep 3")
    peers = Peers(os.path.join(work, "sim"), tree, b.cofre, pub, key)
    os.makedirs(peers.work, exist_ok=True)
    peers.init()
    change = Change(tree, 30)
    # A full every 7 days, as BACKUP_FULL_EVERY=7d does with one backup a
    # day (days pass faster here than the clock: the fulls are asked for).
    peers.env["BACKUP_FULL_EVERY"] = "1000d"
    fulls_env = dict(peers.env, BACKUP_DIR=os.path.join(work, "sim-fulls"))
    fulls_total = 0
    times = {"restic": 0.0, "borg": 0.0, "cofre": 0.0}
    for day in range(1, days + 1):
        if day > 1:
            change.apply(day)
        got = peers.backup("--full" if day % 7 == 1 else "")
        for t, (wall, _) in got.items():
            times[t] += wall
        base.rm(fulls_env["BACKUP_DIR"])
        base.timed(f"{b.cofre} backup -q --no-prune --full", fulls_env)
        fulls_total += dir_bytes(fulls_env["BACKUP_DIR"]) - sum(
            os.path.getsize(os.path.join(fulls_env["BACKUP_DIR"], n))
            for n in os.listdir(fulls_env["BACKUP_DIR"])
            if n.endswith(".index") or n.endswith(".index.minisig") or n.startswith(".cofre"))
        print(f"day {day}/{days}", file=sys.stderr)
    stored = peers.cofre_bytes()
    uploaded = peers.cofre_bytes(uploaded=True)
    print()
    print(f"{days} days of the same daily change, a full every 7 days:")
    print()
    print("| | stored | against daily fulls | backup time, all days |")
    print("| --- | --- | --- | --- |")
    print(f"| {days} daily fulls (cofre, BACKUP_FULL_EVERY=0) | {fulls_total / 1e6:.0f} MB | 1.00× | |")
    for tool, path in (("restic", peers.restic), ("borg", peers.borg)):
        if path:
            size = dir_bytes(path)
            print(f"| {tool} repository | {size / 1e6:.0f} MB | {size / fulls_total:.2f}× | {times[tool]:.0f} s |")
    ok = lambda r: "✓" if r <= 0.35 else "✗ (goal 0.35×)"
    print(f"| cofre, stored (archives, signatures, indexes) | {stored / 1e6:.0f} MB | "
          f"{stored / fulls_total:.2f}× {ok(stored / fulls_total)} | {times['cofre']:.0f} s |")
    print(f"| cofre, uploaded (archives, signatures) | {uploaded / 1e6:.0f} MB | "
          f"{uploaded / fulls_total:.2f}× {ok(uploaded / fulls_total)} | |")


if __name__ == "__main__":
    main()
