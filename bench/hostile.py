#!/usr/bin/env python3
"""Peak memory of `cofre verify` and `cofre restore` on hostile archives.

Each archive is small on disk and declares (or expands to) a gigabyte or
millions of entries: a pax header that declares 1 GiB, a manifest entry
of 1 GiB, a manifest field of 1 GiB, a gzip block whose header declares
1 GiB, a gzip member of 1 GiB of zeros, a zstd frame that asks for a
1 GiB window, and 2,000,000 entries (200,000 for restore). For each, the
script prints the exit code, the peak RSS (as `/usr/bin/time -v` reports
it) against the 64 MiB bound, and cofre's message.

    python3 bench/hostile.py            # builds the release binary if needed
    python3 bench/hostile.py --keep     # keeps the archives in /tmp/cofre-hostile
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.join(REPO, "target", "release", "cofre")
BOUND_KIB = 64 * 1024
GIB = 1 << 30
EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def header(name, typeflag, size, mode=0o644):
    h = bytearray(512)
    name = name.encode() if isinstance(name, str) else name
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % 0
    h[116:124] = b"%07o\0" % 0
    if size < 8 ** 11:
        h[124:136] = b"%011o\0" % size
    else:
        h[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    h[136:148] = b"%011o\0" % 1700000000
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(n):
    return b"\0" * ((512 - n % 512) % 512)


def repeat(out, byte, n):
    chunk = byte * (1 << 20)
    while n > 0:
        out.write(chunk[: min(n, len(chunk))])
        n -= len(chunk)


def entry_json(i):
    return json.dumps({"path": f"files/f{i}", "type": "file", "size": 0, "mode": 420,
                       "mtime": "2023-11-14T22:13:20Z", "hash": EMPTY_BLAKE3}, separators=(",", ":"))


def info_json(count):
    return {"format": "cofre-archive", "format_version": 1, "tool": "bench", "created_at": "x",
            "host": "h", "source": "/", "options": {"compression": "gzip:1", "encryption": "none",
                                                     "hash": "blake3"},
            "totals": {"entries": count, "files": count, "dirs": 0, "symlinks": 0, "bytes": 0}}


def write_manifest_stream(out, count, extra_key=None, extra_len=0, huge_entry=0):
    """The manifest entry (header and data) for `count` empty files, or a
    bomb: one entry whose path is `huge_entry` bytes, or an extra field."""
    head = json.dumps(info_json(count))[:-1]
    parts_len = len(head) + len(',"entries":[') + len("]}")
    if huge_entry:
        pre, post = '{"path":"', '","type":"file","size":0,"mode":420,"mtime":"x"}'
        parts_len += len(pre) + huge_entry + len(post)
    else:
        parts_len += sum(len(entry_json(i)) for i in range(count)) + max(count - 1, 0)
    if extra_key:
        pre_x, post_x = f',"{extra_key}":"', '"'
        parts_len += len(pre_x) + extra_len + len(post_x)
    out.write(header("cofre-manifest.json", b"0", parts_len))
    out.write(head.encode())
    if extra_key:
        out.write(pre_x.encode())
        repeat(out, b"y", extra_len)
        out.write(post_x.encode())
    out.write(b',"entries":[')
    if huge_entry:
        out.write(pre.encode())
        repeat(out, b"A", huge_entry)
        out.write(post.encode())
    else:
        for i in range(count):
            if i:
                out.write(b",")
            out.write(entry_json(i).encode())
    out.write(b"]}")
    out.write(pad(parts_len))


def build(path, kind):
    if kind == "gzip block bomb":
        m = bytes([0x1F, 0x8B, 8, 0x04, 0, 0, 0, 0, 0, 3]) + (12).to_bytes(2, "little") + b"CF"
        m += (8).to_bytes(2, "little") + (GIB).to_bytes(4, "little") + (GIB).to_bytes(4, "little")
        with open(path, "wb") as f:
            f.write(m + b"\0" * 65536)
        return
    if kind == "zstd window bomb":
        # One frame of zeros compressed with a 1 GiB window (zstd --long=30).
        raw = path + ".raw"
        with open(raw, "wb") as f:
            f.write(header("files/z", b"0", GIB + 4096))
            repeat(f, b"\0", GIB + 4096)
            f.write(pad(GIB + 4096))
        subprocess.run(["zstd", "-q", "-1", "--long=30", "-f", raw, "-o", path], check=True)
        os.remove(raw)
        return
    with gzip.open(path, "wb", compresslevel=1) as out:
        if kind == "pax bomb":
            out.write(header("PaxHeaders/x", b"x", GIB))
            repeat(out, b"9", GIB)
            out.write(header("files/a", b"0", 0))
        elif kind == "manifest entry bomb":
            write_manifest_stream(out, 1, huge_entry=GIB)
        elif kind == "manifest field bomb":
            write_manifest_stream(out, 0, extra_key="padding", extra_len=GIB)
        elif kind == "gzip bomb (1 GiB of zeros)":
            out.write(header("files/zeros", b"0", GIB))
            repeat(out, b"\0", GIB)
        elif kind.startswith("entries"):
            count = int(kind.split()[1].replace(",", ""))
            for i in range(count):
                out.write(header(f"files/f{i}", b"0", 0))
            write_manifest_stream(out, count)
        out.write(b"\0" * 1024)


def timed(cmd, env):
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        r = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + cmd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rss = next(int(l.split(":")[1]) for l in t.read().splitlines()
                   if "Maximum resident set size" in l)
        err = next((l for l in r.stderr.splitlines() if l.startswith("error: ")), "ok")
        return r.returncode, rss, err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO, check=True)
    work = "/tmp/cofre-hostile"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env["HOME"] = os.path.join(work, "home")
    env["BACKUP_DIR"] = os.path.join(work, "backups")
    kinds = ["pax bomb", "manifest entry bomb", "manifest field bomb", "gzip block bomb",
             "gzip bomb (1 GiB of zeros)", "zstd window bomb", "entries 2,000,000", "entries 200,000"]
    print(f"{'input':<28} {'on disk':>10}  {'command':<8} {'exit':>4} {'peak RSS':>10}  bound   message")
    for kind in kinds:
        ext = ".tar.zst" if "zstd" in kind else ".tar.gz"
        path = os.path.join(work, kind.split(" (")[0].replace(" ", "-").replace(",", "") + ext)
        build(path, kind)
        size = os.path.getsize(path)
        commands = [("verify", ["verify", path, "--allow-unsigned"])]
        if kind != "entries 2,000,000":
            target = os.path.join(work, "target")
            commands.append(("restore", ["restore", path, "--to", target, "--allow-unsigned"]))
        if kind == "entries 200,000":
            commands = commands[1:]
        for name, cmd in commands:
            shutil.rmtree(os.path.join(work, "target"), ignore_errors=True)
            code, rss, err = timed([BIN] + cmd, env)
            ok = "✓" if rss <= BOUND_KIB else "✗"
            print(f"{kind:<28} {size / 1e6:>8.1f} MB  {name:<8} {code:>4} {rss / 1024:>7.1f} MiB  {ok} 64 MiB  "
                  f"{err[:110]}", flush=True)
        if not args.keep:
            os.remove(path)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
