#!/usr/bin/env python3
"""Database restore and restore-drill benchmark: cofre against MongoDB's own
mongodump/mongorestore (built from tools/mongo-tools), on a SecantusDB of
its own, side by side and interleaved, several runs.

  1. The database part of a backup: `cofre backup` of an empty project with
     MONGODB_URI, against `mongodump --archive | gzip | age -r KEY`.
  2. Database restore: `cofre restore ARCHIVE --mongo-only` against
     `age -d | gunzip | mongorestore --archive`, both at their default
     parallelism, into fresh databases on the same server.
  3. The server's floor: the fastest raw insert of the same documents any
     client gets (best batch size and parallelism, nothing else), plus
     building the same indexes on them, which every restore must do.
  4. A full drill (`cofre drill`: files and database restored, checked,
     compared, removed) of the medium tree plus the database, against the
     `cofre backup` that made it.

    python3 bench/drill.py                 # 10,000 users, 90,000 messages, 3 runs
    python3 bench/drill.py --runs 5 --users 1000 --messages 9000
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import free_port, make_tree, sh, shlex_quote, timed, wait_for_port, warm  # noqa: E402

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cofre-test")
VENV = os.path.join(CACHE, "secantusdb-0.7.0b3")


def start_server(work):
    if not os.path.exists(os.path.join(VENV, "bin", "secantusd-py")):
        sh(f"python3 -m venv {VENV} && {VENV}/bin/pip install -q secantusdb==0.7.0b3")
    port = free_port()
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([os.path.join(VENV, "bin", "secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
                             "--storage-path", os.path.join(work, "db")], stdout=log, stderr=log)
    wait_for_port(port)
    return proc, f"mongodb://127.0.0.1:{port}/?directConnection=true", port


def pipeline(cmd):
    """A pipeline that fails when any of its commands fails."""
    return f"bash -o pipefail -c {shlex_quote(cmd)}"


def drop(port, db):
    py = os.path.join(VENV, "bin", "python")
    sh(f"{py} -c \"import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:{port}/?directConnection=true').drop_database('{db}')\"")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--messages", type=int, default=90000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(HERE, "out"))
    ap.add_argument("--no-drill", action="store_true", help="skip the full drill (step 4)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    sh(f"cd {REPO} && cargo build --release --quiet && cargo build --release --quiet --example mongo_bench")
    tools = sh(f"{REPO}/tools/mongo-tools/build.sh").stdout.strip()
    cofre = os.path.join(REPO, "target", "release", "cofre")
    bench = os.path.join(REPO, "target", "release", "examples", "mongo_bench")
    mongodump, mongorestore = os.path.join(tools, "mongodump"), os.path.join(tools, "mongorestore")
    tmp = tempfile.mkdtemp(prefix="cofre-drill-bench-", dir=work)
    server, uri, port = start_server(tmp)
    results = {}

    def rec(name, wall, rss):
        results.setdefault(name, []).append((wall, rss))

    def med(name):
        rows = results[name]
        return statistics.median(r[0] for r in rows), max(r[1] for r in rows)

    try:
        app_uri = uri.replace("/?", "/app?")
        sh(f"{bench} app '{uri}' app {args.users} {args.messages}")
        home = os.path.join(tmp, "home")
        os.makedirs(home)
        key = os.path.join(tmp, "key.txt")
        sh(f"{cofre} keygen -o {key}")
        pub = [l.split(": ", 1)[1].strip() for l in open(key) if l.startswith("# public key: ")][0]
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_") and k != "MONGODB_URI"}
        base_env["HOME"] = home

        def env_for(source, out, **extra):
            e = dict(base_env)
            e.update({"BACKUP_SOURCE": source, "BACKUP_DIR": out, "BACKUP_RECIPIENTS": pub,
                      "BACKUP_IDENTITY_FILE": key, "MONGODB_URI": app_uri})
            e.update(extra)
            return e

        # 1. The database part of a backup.
        ref = os.path.join(tmp, "ref.age")
        db_only = os.path.join(tmp, "dbonly")
        for i in range(args.runs):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for which in order:
                if which == 0:
                    sh(f"rm -rf {db_only}")
                    w, r = timed(f"{cofre} backup -q --no-prune", env=env_for(empty, db_only))
                    rec("cofre backup (database part)", w, r)
                else:
                    w, r = timed(pipeline(f"{mongodump} --quiet --uri '{uri}' --db app --archive | gzip | age -r {pub} > {ref}"))
                    rec("mongodump --archive | gzip | age", w, r)
        archive = [os.path.join(db_only, n) for n in os.listdir(db_only) if n.endswith(".age")][0]

        # 2. Database restore, into fresh databases on the same server.
        for i in range(args.runs):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for which in order:
                if which == 0:
                    drop(port, "r_cofre")
                    w, r = timed(f"{cofre} restore -q {archive} --mongo-only --mongo-uri '{uri}' --to-db r_cofre -i {key}",
                                 env=env_for(empty, db_only))
                    rec("cofre restore --mongo-only", w, r)
                else:
                    drop(port, "r_ref")
                    w, r = timed(pipeline(f"age -d -i {key} {ref} | gunzip | {mongorestore} --quiet --uri '{uri}' "
                                          f"--archive --nsFrom 'app.*' --nsTo 'r_ref.*'"))
                    rec("age -d | gunzip | mongorestore --archive", w, r)
        drop(port, "r_cofre")
        drop(port, "r_ref")

        # 3. The server's floor.
        dump = os.path.join(tmp, "dump")
        sh(f"{mongodump} --quiet --uri '{uri}' --db app --out {dump}")
        floor_env = dict(os.environ, FLOOR_BATCHES="1000,5000", FLOOR_PARALLEL="1,2,4")
        out = subprocess.run([bench, "floor", uri, "floor", os.path.join(dump, "app")], env=floor_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
        insert_s, index_s, batch, parallel, docs = out.stdout.split()
        insert_s, index_s = float(insert_s), float(index_s)

        # 4. A full drill against the backup that made it.
        drill = None
        if not args.no_drill:
            tree = os.path.join(work, "tree-medium")
            make_tree(tree, "medium")
            warm(tree)
            full = os.path.join(tmp, "full")
            for i in range(args.runs):
                sh(f"rm -rf {full}")
                w, r = timed(f"{cofre} backup -q --no-prune", env=env_for(tree, full))
                rec("cofre backup (medium tree + database)", w, r)
                w, r = timed(f"{cofre} drill -q --json > {tmp}/drill.json",
                             env=env_for(tree, full, BACKUP_DRILL_MONGODB_URI=uri))
                rec("cofre drill (files + database, compared)", w, r)
                d = json.load(open(f"{tmp}/drill.json"))
                assert d["ok"], d
                rec("  of which recovery time (files + database restore)", d["recovery_seconds"], 0)
            drill = True
    finally:
        server.terminate()
        server.wait()
        sh(f"rm -rf {tmp}", check=False)

    print(f"Machine: {os.cpu_count()} cores; server: SecantusDB 0.7.0b3 on loopback; "
          f"{args.users} users + {args.messages} messages; median of {args.runs} runs\n")
    print("| command | wall | peak RSS | ratio |")
    print("| --- | --- | --- | --- |")

    def row(name, ref=None, target=None):
        w, r = med(name)
        ratio = ""
        if ref:
            rw = med(ref)[0]
            mark = "" if target is None else (" ✓" if w / rw <= target else f" ✗ (target {target}×)")
            ratio = f"{w / rw:.2f}× {ref}{mark}"
        rss = f"{r // 1024} MiB" if r else ""
        print(f"| {name} | {w:.2f} s | {rss} | {ratio} |")

    row("mongodump --archive | gzip | age")
    row("cofre backup (database part)", "mongodump --archive | gzip | age")
    row("age -d | gunzip | mongorestore --archive")
    row("cofre restore --mongo-only", "age -d | gunzip | mongorestore --archive", 0.7)
    restore_s = med("cofre restore --mongo-only")[0]
    floor = insert_s + index_s
    print(f"| server floor: raw inserts (batch {batch}, {parallel} in flight) + the same indexes | "
          f"{insert_s:.2f} s + {index_s:.2f} s = {floor:.2f} s | | cofre restore is {restore_s / floor:.2f}× the floor"
          f"{' ✓ (within 1.1×)' if restore_s / floor <= 1.1 else ''} |")
    if drill:
        row("cofre backup (medium tree + database)")
        row("cofre drill (files + database, compared)", "cofre backup (medium tree + database)", 2.0)
        row("  of which recovery time (files + database restore)")
        back = med("cofre backup (medium tree + database)")[0]
        d = med("cofre drill (files + database, compared)")[0]
        print(f"\nDrill over backup: {d / back:.2f}×; the database restore alone is {restore_s:.2f} s, "
              f"of which the server's own floor is {floor:.2f} s.")


if __name__ == "__main__":
    main()
