#!/usr/bin/env python
"""Mirror a directory tree into another one, like ``rsync -a --delete --exclude-from=FILE``.

Used by ``make collection`` when rsync is not installed. Files are copied when their size or
modification time differs; entries in the destination that no longer exist in the source are
removed, except excluded ones (rsync --delete leaves excluded paths alone too). Symbolic links are
copied as links. Exclude patterns: see tools/sync-excludes.txt.

Usage: sync_tree.py --exclude-from FILE SRC DEST
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import stat
import sys


class Excludes:
    """The subset of rsync exclude patterns documented in tools/sync-excludes.txt."""

    def __init__(self, lines):
        self.anchored = []
        self.dir_names = []
        self.globs = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            if line.startswith('/'):
                self.anchored.append(line.strip('/'))
            elif line.endswith('/'):
                self.dir_names.append(line.rstrip('/'))
            else:
                self.globs.append(line)

    def match(self, rel, is_dir):
        """Return True if the path (relative to the tree root, '/' separated) is excluded."""
        name = rel.rsplit('/', 1)[-1]
        if is_dir and (rel in self.anchored or any(fnmatch.fnmatchcase(name, pat) for pat in self.dir_names)):
            return True
        if not is_dir and rel in self.anchored:
            return True
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.globs)


def is_real_dir(path):
    """A directory that is not a symbolic link."""
    return os.path.isdir(path) and not os.path.islink(path)


def same_file(src, dst):
    """True if dst looks like an up-to-date copy of src (rsync's quick check)."""
    try:
        s_st = os.lstat(src)
        d_st = os.lstat(dst)
    except FileNotFoundError:
        return False
    if stat.S_IFMT(s_st.st_mode) != stat.S_IFMT(d_st.st_mode):
        return False
    if stat.S_ISLNK(s_st.st_mode):
        return os.readlink(src) == os.readlink(dst)
    return (s_st.st_size == d_st.st_size and int(s_st.st_mtime) == int(d_st.st_mtime)
            and stat.S_IMODE(s_st.st_mode) == stat.S_IMODE(d_st.st_mode))


def remove(path):
    """Remove a file, link or directory tree."""
    if is_real_dir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def sync(src_root, dst_root, excludes):
    """Make dst_root mirror src_root. Return (copied, deleted) counts."""
    copied = deleted = 0
    os.makedirs(dst_root, exist_ok=True)
    stack = ['']
    while stack:
        rel_dir = stack.pop()
        src_dir = os.path.join(src_root, rel_dir)
        dst_dir = os.path.join(dst_root, rel_dir)
        wanted = set()
        for name in sorted(os.listdir(src_dir)):
            rel = (rel_dir + '/' + name) if rel_dir else name
            src = os.path.join(src_dir, name)
            dst = os.path.join(dst_dir, name)
            src_is_dir = is_real_dir(src)
            if excludes.match(rel, src_is_dir):
                continue
            wanted.add(name)
            if src_is_dir:
                if os.path.lexists(dst) and not is_real_dir(dst):
                    os.unlink(dst)
                os.makedirs(dst, exist_ok=True)
                shutil.copystat(src, dst)
                stack.append(rel)
                continue
            if same_file(src, dst):
                continue
            if os.path.lexists(dst):
                remove(dst)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copy2(src, dst)
            copied += 1
        for name in os.listdir(dst_dir):
            if name in wanted:
                continue
            rel = (rel_dir + '/' + name) if rel_dir else name
            dst = os.path.join(dst_dir, name)
            if excludes.match(rel, is_real_dir(dst)):
                continue
            remove(dst)
            deleted += 1
    return copied, deleted


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--exclude-from', required=True)
    parser.add_argument('src')
    parser.add_argument('dest')
    opts = parser.parse_args()
    with open(opts.exclude_from, encoding='utf-8') as handle:
        excludes = Excludes(handle)
    src = os.path.abspath(opts.src)
    dest = os.path.abspath(opts.dest)
    rel = os.path.relpath(dest, src)
    if rel == '.' or (not rel.startswith('..') and not excludes.match(rel.split(os.sep)[0], True)):
        sys.exit('sync_tree: destination %s is inside the source and not excluded' % dest)
    copied, deleted = sync(src, dest, excludes)
    print('sync_tree: %s -> %s (%d copied, %d deleted)' % (src, dest, copied, deleted))
    return 0


if __name__ == '__main__':
    sys.exit(main())
