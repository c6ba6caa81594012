#!/usr/bin/env python3
"""Pick ~1 GiB / ~20k real files from /usr/lib and /usr/share (item 5 of scripts/bench).

usage: bigtree.py key            print a key naming the selection (changes when any picked
                                 file's path, size or mtime does)
       bigtree.py copy DEST      copy the selection to DEST/usr/... (DEST must be empty)
       bigtree.py pick           print the relative path of one picked file of 100-500 KiB

The pick is deterministic: files of at least 1 MiB in path order up to 700 MiB, then smaller
files in path order until 20,000 files or 1 GiB in all. Symlinks and unreadable files are skipped.
"""

import hashlib
import os
import shutil
import stat
import sys

TOPS = ("/usr/lib", "/usr/share")
BIG = 1 << 20
BIG_BUDGET = 700 << 20
TOTAL_BUDGET = 1 << 30
MAX_FILES = 20000


def regular_files():
    for top in TOPS:
        for dirpath, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
                    yield path, st


def selection():
    files = list(regular_files())
    picked, total = [], 0
    for path, st in files:
        if st.st_size >= BIG and total + st.st_size <= BIG_BUDGET:
            picked.append((path, st))
            total += st.st_size
    for path, st in files:
        if len(picked) >= MAX_FILES:
            break
        if st.st_size < BIG and total + st.st_size <= TOTAL_BUDGET:
            picked.append((path, st))
            total += st.st_size
    picked.sort(key=lambda p: p[0])
    return picked, total


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "key"
    picked, total = selection()
    if cmd == "key":
        h = hashlib.sha256()
        for path, st in picked:
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        print(f"{h.hexdigest()[:16]} {len(picked)} {total}")
    elif cmd == "copy":
        dest = sys.argv[2]
        for path, _st in picked:
            target = os.path.join(dest, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
    elif cmd == "pick":
        for path, st in picked:
            if 100 << 10 <= st.st_size <= 500 << 10:
                print(path.lstrip("/"))
                return
        print(picked[0][0].lstrip("/"))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
