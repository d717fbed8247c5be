#!/usr/bin/env python3
"""Build the training corpus for the bundled tiny model family (pure python, no dependencies).

Sources (present on every machine of the project, see shared/README.md):
  prose: Debian `fortunes` (/usr/share/games/fortunes/*, '%'-separated entries)
  code:  Python standard library sources (/usr/lib/python3.11, else the pyenv 3.11 lib)

Writes (git-ignored) .corpus/{prose,code}_{train,heldout}.txt, documents separated by a line
holding only "\\x1e" (ASCII record separator), plus .corpus/manifest.json; and the committed
held-out evaluation texts models/eval/{prose,code}_heldout.txt (about 80 KB each, taken from the
held-out split only, whole documents separated by blank lines).

The split is deterministic: a document goes to held-out when crc32(its key) % 20 == 0
(key = fortune file name + entry index for prose, relative path for code).

Usage: python3 tools/train/prepare_corpus.py [--out .corpus] [--eval-dir models/eval]
"""
import argparse
import json
import os
import re
import zlib

FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_SKIP = {"ascii-art"}  # pictures, not prose
PY_DIRS = ["/usr/lib/python3.11", "/root/.pyenv/versions/3.11.7/lib/python3.11"]
PY_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
                 "ensurepip", "config-3.11-x86_64-linux-gnu", "turtledemo"}
PY_MAX_FILE = 150_000
CODE_TRAIN_CAP = 9_000_000
PROSE_TRAIN_CAP = 9_000_000
EVAL_CAP = 80_000
SEP = "\n\x1e\n"


def heldout(key):
    return zlib.crc32(key.encode()) % 20 == 0


def clean_fortune(text):
    text = re.sub(r".\x08", "", text)          # overstrike (underline/bold) sequences
    text = text.replace("\r", "")
    text = "".join(ch for ch in text if ch in "\n\t" or ch >= " ")
    lines = [ln.rstrip() for ln in text.split("\n")]
    return "\n".join(lines).strip("\n")


def prose_docs():
    docs = []
    for name in sorted(os.listdir(FORTUNE_DIR)):
        path = os.path.join(FORTUNE_DIR, name)
        if "." in name or name in FORTUNE_SKIP or not os.path.isfile(path):
            continue
        raw = open(path, "rb").read().decode("utf-8", errors="replace")
        for i, entry in enumerate(re.split(r"(?m)^%\s*$", raw)):
            entry = clean_fortune(entry)
            if len(entry.strip()) < 20:
                continue
            docs.append((f"{name}/{i}", entry))
    return docs


def code_docs():
    root = next(d for d in PY_DIRS if os.path.isdir(d))
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in PY_SKIP_PARTS and not d.startswith("test"))
        for fn in sorted(filenames):
            if not fn.endswith(".py") or fn.startswith("test"):
                continue
            path = os.path.join(dirpath, fn)
            if os.path.islink(path) or os.path.getsize(path) > PY_MAX_FILE:
                continue
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            text = text.replace("\r\n", "\n").replace("\x1e", "")
            if len(text.strip()) < 200:
                continue
            docs.append((os.path.relpath(path, root), text.rstrip() + "\n"))
    return root, docs


def split(docs, cap):
    train, held = [], []
    size = 0
    for key, text in docs:
        if heldout(key):
            held.append(text)
        elif size < cap:
            train.append(text)
            size += len(text.encode())
    return train, held


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".corpus")
    ap.add_argument("--eval-dir", default="models/eval")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.eval_dir, exist_ok=True)
    manifest = {}
    root, cdocs = code_docs()
    for domain, docs, cap in (("prose", prose_docs(), PROSE_TRAIN_CAP), ("code", cdocs, CODE_TRAIN_CAP)):
        train, held = split(docs, cap)
        for part, items in (("train", train), ("heldout", held)):
            with open(os.path.join(args.out, f"{domain}_{part}.txt"), "w", encoding="utf-8") as f:
                f.write(SEP.join(items))
        # committed eval text: whole held-out documents up to EVAL_CAP bytes
        ev, n = [], 0
        for t in held:
            b = len(t.encode()) + 2
            if n + b > EVAL_CAP:
                if n == 0:  # first document alone is too big: take a prefix of whole lines
                    t = t.encode()[:EVAL_CAP].decode("utf-8", "ignore").rsplit("\n", 1)[0] + "\n"
                    ev.append(t)
                continue
            ev.append(t)
            n += b
        with open(os.path.join(args.eval_dir, f"{domain}_heldout.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(x.strip("\n") for x in ev) + "\n")
        manifest[domain] = {
            "source": FORTUNE_DIR if domain == "prose" else root,
            "docs_total": len(docs), "train_docs": len(train), "heldout_docs": len(held),
            "train_bytes": sum(len(t.encode()) for t in train),
            "heldout_bytes": sum(len(t.encode()) for t in held),
            "eval_docs": len(ev), "eval_bytes": os.path.getsize(os.path.join(args.eval_dir, f"{domain}_heldout.txt")),
        }
    manifest["split"] = "held-out iff crc32(key) % 20 == 0; key = fortune-file/entry-index or stdlib relative path"
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
