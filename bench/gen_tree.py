#!/usr/bin/env python3
"""Writes a project tree for the benchmark when ../shared/bench/make-project-tree.sh
is not available: the same mix (source text, JSON data, incompressible
images, half-compressible binaries, awkward names, and the directories a
backup leaves out), deterministic, from a seed.

    gen_tree.py DEST [small|medium|large]      a project tree (~100/400/1000 MB)
    gen_tree.py DEST files:N                    N files of 1 KiB of text (many small files)
"""
import json
import os
import random
import sys


def text_block(rng, words, size):
    out = []
    n = 0
    while n < size:
        w = rng.choice(words)
        out.append(w)
        n += len(w) + 1
    return (" ".join(out))[:size]


def project(dest, size):
    scale = {"small": 1, "medium": 4, "large": 10}[size]
    rng = random.Random(42)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12))) for _ in range(20000)]
    # Source code: ~40% of the bytes, compresses ~4x.
    for i in range(1500 * scale):
        d = os.path.join(dest, "src", f"pkg{i % 97:02}", f"mod{i % 13}")
        os.makedirs(d, exist_ok=True)
        body = "\n".join(f"def {rng.choice(words)}({rng.choice(words)}): return {rng.choice(words)} + {rng.randint(0, 999)}"
                         for _ in range(rng.randint(20, 400)))
        with open(os.path.join(d, f"f{i}.py"), "w") as f:
            f.write(body)
    # JSON exports.
    os.makedirs(os.path.join(dest, "data"), exist_ok=True)
    for i in range(50 * scale):
        rows = [{"id": i * 1000 + j, "name": f"user{j}", "score": rng.random(), "tags": rng.sample("abcde", 3)} for j in range(500)]
        with open(os.path.join(dest, "data", f"export_{i:03}.json"), "w") as f:
            json.dump(rows, f)
    # Images: incompressible.
    os.makedirs(os.path.join(dest, "public", "assets"), exist_ok=True)
    for i in range(400 * scale):
        with open(os.path.join(dest, "public", "assets", f"img{i}.png"), "wb") as f:
            f.write(rng.randbytes(rng.randint(2000, 120000)))
    # Shared libraries: half compressible.
    os.makedirs(os.path.join(dest, "vendor", "lib"), exist_ok=True)
    for i in range(15 * scale):
        n = rng.randint(500_000, 3_000_000)
        with open(os.path.join(dest, "vendor", "lib", f"lib{i}.so"), "wb") as f:
            f.write(rng.randbytes(n // 2) + text_block(rng, words, n // 2).encode())
    # Left out by a backup.
    for d in ["node_modules/x", ".git/objects", "logs", "backups"]:
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    with open(os.path.join(dest, "node_modules", "x", "index.js"), "w") as f:
        f.write("module.exports = 1\n" * 10000)
    with open(os.path.join(dest, ".git", "objects", "pack.bin"), "wb") as f:
        f.write(rng.randbytes(5_000_000))
    with open(os.path.join(dest, "logs", "app.log"), "w") as f:
        f.write("old log line\n")
    with open(os.path.join(dest, ".env"), "w") as f:
        f.write("API_KEY=do-not-back-me-up\n")
    # Awkward names.
    odd = os.path.join(dest, "odd", "名前 with spaces")
    os.makedirs(odd, exist_ok=True)
    with open(os.path.join(odd, "ficheiro ação.txt"), "w") as f:
        f.write("hi\n")
    long_dir = os.path.join(dest, "odd", "d" * 120)
    os.makedirs(long_dir, exist_ok=True)
    with open(os.path.join(long_dir, "f" * 150 + ".txt"), "w") as f:
        f.write("long\n")
    os.symlink("../data/export_000.json", os.path.join(dest, "odd", "link-to-data"))
    open(os.path.join(dest, "odd", "empty-file"), "w").close()
    os.makedirs(os.path.join(dest, "odd", "empty-dir"), exist_ok=True)


def small_files(dest, n):
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    per_dir = 500
    for i in range(n):
        d = os.path.join(dest, f"d{i // per_dir:04}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % per_dir:03}.txt"), "w") as f:
            f.write(text_block(rng, words, 1024))


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    dest = sys.argv[1]
    kind = sys.argv[2] if len(sys.argv) > 2 else "medium"
    if os.path.exists(dest) and os.listdir(dest):
        print(f"refusing to write into non-empty {dest}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(dest, exist_ok=True)
    if kind.startswith("files:"):
        small_files(dest, int(kind.split(":", 1)[1]))
    elif kind in ("small", "medium", "large"):
        project(dest, kind)
    else:
        print(f"unknown kind {kind}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
