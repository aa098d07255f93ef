#!/usr/bin/env python3
"""Offsite upload: throughput, peak memory and the bandwidth cap.

Starts moto (the S3 test server, from the venv scripts/test makes) on
loopback, makes a 1 GiB archive (incompressible data, gzip:1), and measures
side by side, interleaved:

- `cofre upload` of that archive into an empty bucket (wall, peak RSS);
- boto3's `upload_file` (multipart, its default 8 MiB parts and 10 threads)
  of the same file, the reference;
- `cofre upload` of a 200 MiB archive with BACKUP_REMOTE_BANDWIDTH=20M: the
  rate it held, against the cap.

    python3 bench/offsite.py [--runs 3] [--size-mib 1024]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import free_port, wait_for_port  # noqa: E402
BIN = os.path.join(REPO, "target", "release", "cofre")
MOTO = os.path.expanduser("~/.cache/cofre-test/moto-5.2.5/bin")


def timed(cmd, env):
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        start = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + cmd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        if r.returncode != 0:
            raise SystemExit(f"{cmd} failed:\n{r.stderr[-3000:]}")
        rss = next(int(l.split(":")[1]) for l in t.read().splitlines()
                   if "Maximum resident set size" in l)
        return wall, rss


def boto(endpoint, code):
    return subprocess.run([os.path.join(MOTO, "python"), "-c", code],
                          env=dict(os.environ, ENDPOINT=endpoint), check=True,
                          stdout=subprocess.PIPE, text=True).stdout


BOTO_CLIENT = ("import boto3, os, time, sys\n"
               "s3 = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], aws_access_key_id='t', "
               "aws_secret_access_key='t', region_name='us-east-1')\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(MOTO, "moto_server")):
        raise SystemExit("moto is not installed; run scripts/test once (it makes the venv)")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO, check=True)
    work = tempfile.mkdtemp(prefix="cofre-offsite-")
    port = free_port()
    moto = subprocess.Popen([os.path.join(MOTO, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, tries=100)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
        env.update(HOME=os.path.join(work, "home"), AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="t",
                   AWS_SECRET_ACCESS_KEY="t", AWS_REGION="us-east-1", MONGODB_URI="",
                   BACKUP_COMPRESSION="gzip:1")

        def archive(size_mib, name):
            project = os.path.join(work, name)
            os.makedirs(project)
            with open(os.path.join(project, "data.bin"), "wb") as f:
                for _ in range(size_mib):
                    f.write(os.urandom(1 << 20))
            e = dict(env, BACKUP_SOURCE=project, BACKUP_DIR=os.path.join(work, name + "-backups"))
            subprocess.run([BIN, "backup", "-q", "--no-prune"], env=e, check=True, stdout=subprocess.DEVNULL)
            path = next(os.path.join(e["BACKUP_DIR"], n) for n in os.listdir(e["BACKUP_DIR"]) if n.endswith(".age"))
            return e, path

        big_env, big = archive(args.size_mib, "big")
        size = os.path.getsize(big)
        rows = {"cofre upload": [], "boto3 upload_file": []}
        for run in range(args.runs):
            bucket = f"run{run}"
            boto(endpoint, BOTO_CLIENT + f"s3.create_bucket(Bucket='{bucket}')\ns3.create_bucket(Bucket='{bucket}-ref')")
            wall, rss = timed([BIN, "upload"], dict(big_env, BACKUP_REMOTE=f"s3://{bucket}/x"))
            rows["cofre upload"].append((wall, rss))
            out = boto(endpoint, BOTO_CLIENT + "t = time.monotonic()\n"
                       f"s3.upload_file({big!r}, '{bucket}-ref', 'x')\nprint(time.monotonic() - t)")
            rows["boto3 upload_file"].append((float(out.strip()), 0))
            boto(endpoint, BOTO_CLIENT + f"""
for b in ['{bucket}', '{bucket}-ref']:
    for o in s3.list_objects_v2(Bucket=b).get('Contents', []):
        s3.delete_object(Bucket=b, Key=o['Key'])
""")
        print(f"\n{size / 2**20:.0f} MiB archive to moto on loopback, median of {args.runs}:\n")
        print("| command | wall | MiB/s | peak RSS | ratio |")
        print("| --- | --- | --- | --- | --- |")
        ref = statistics.median(w for w, _ in rows["boto3 upload_file"])
        for name, r in rows.items():
            wall = statistics.median(w for w, _ in r)
            rss = max(m for _, m in r)
            rss_text = f"{rss / 1024:.0f} MiB" if rss else "(in Python)"
            ratio = "" if name.startswith("boto3") else f"{wall / ref:.2f}× boto3"
            print(f"| {name} | {wall:.2f} s | {size / 2**20 / wall:.0f} | {rss_text} | {ratio} |")

        capped_env, capped = archive(200, "capped")
        csize = os.path.getsize(capped)
        boto(endpoint, BOTO_CLIENT + "s3.create_bucket(Bucket='capped')")
        e = dict(capped_env, BACKUP_REMOTE="s3://capped/x", BACKUP_REMOTE_BANDWIDTH="20M",
                 BACKUP_LOG_FORMAT="json")
        start = time.monotonic()
        r = subprocess.run([BIN, "upload", "-v"], env=e, check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        import json
        sent = next(json.loads(l)["fields"] for l in r.stderr.splitlines()
                    if '"bytes_per_second"' in l)
        rate = int(sent["bytes_per_second"]) / 2**20
        print(f"\nBACKUP_REMOTE_BANDWIDTH=20M (20 MiB/s), {csize / 2**20:.0f} MiB: the data went at "
              f"{rate:.2f} MiB/s ({rate / 20 - 1:+.1%} of the cap); the whole command took {wall:.1f} s "
              f"({csize / wall / 2**20:.2f} MiB/s with listing, signature, lock and completion)")
    finally:
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
