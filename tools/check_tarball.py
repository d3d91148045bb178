#!/usr/bin/env python
"""Check a built collection tarball for things that must never ship.

Fails (exit 1) if the tarball holds any of:
  * virtualenvs, build or demo trees, VCS data, tool state:
    .venv/ .build/ .demo/ .git/ .ansible/ .pytest_cache/ __pycache__/ *.pyc, top-level collections/
  * test and benchmark output: tests/output/, benchmarks/results/
  * the repository's development packages (pyproject.toml: qkdsim/, testbed/, *.egg-info/)
  * run-time state directories (a path component named state, .state, *_state, *-state, *.state)
  * nested tarballs (*.tar.gz), absolute or '..' member names, links pointing outside the tree
and if MANIFEST.json / FILES.json are missing or name another collection.

Usage: check_tarball.py TARBALL [--namespace qsafe --name keyfabric]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import posixpath
import sys
import tarfile

FORBIDDEN_COMPONENTS = ('.venv', '.build', '.demo', '.git', '.ansible', '.pytest_cache', '__pycache__')
FORBIDDEN_PREFIXES = ('tests/output', 'benchmarks/results', 'collections', 'qkdsim', 'testbed', 'pyproject.toml')
FORBIDDEN_DIR_PATTERNS = ('*.egg-info',)
STATE_DIR_PATTERNS = ('state', '.state', '*_state', '*-state', '*.state')
FORBIDDEN_FILE_PATTERNS = ('*.pyc', '*.pyo', '*.tar.gz')
LARGE_FILE = 2 * 1024 * 1024


def problems_for(member):
    """Yield the problems found with one tar member."""
    name = member.name
    if name.startswith('/') or '..' in name.split('/'):
        yield 'unsafe member name'
        return
    parts = [part for part in name.split('/') if part not in ('', '.')]
    if not parts:
        return
    for part in parts:
        if part in FORBIDDEN_COMPONENTS:
            yield 'contains %s' % part
    rel = '/'.join(parts)
    for prefix in FORBIDDEN_PREFIXES:
        if rel == prefix and member.isfile():
            yield 'is %s' % prefix
        elif rel == prefix or rel.startswith(prefix + '/'):
            yield 'under %s/' % prefix
    dir_parts = parts if member.isdir() else parts[:-1]
    for part in dir_parts:
        if any(fnmatch.fnmatchcase(part, pat) for pat in FORBIDDEN_DIR_PATTERNS):
            yield 'packaging metadata %s/' % part
        if any(fnmatch.fnmatchcase(part, pat) for pat in STATE_DIR_PATTERNS):
            yield 'state directory %s/' % part
    if member.isfile() and any(fnmatch.fnmatchcase(parts[-1], pat) for pat in FORBIDDEN_FILE_PATTERNS):
        yield 'forbidden file type'
    if member.issym() or member.islnk():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), member.linkname))
        if member.linkname.startswith('/') or target.startswith('..'):
            yield 'link pointing outside the collection (%s)' % member.linkname


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('tarball')
    parser.add_argument('--namespace', default='qsafe')
    parser.add_argument('--name', default='keyfabric')
    opts = parser.parse_args()

    errors = []
    warnings = []
    with tarfile.open(opts.tarball, 'r:gz') as tar:
        members = tar.getmembers()
        names = {posixpath.normpath(member.name) for member in members}
        for member in members:
            for problem in problems_for(member):
                errors.append('%s: %s' % (member.name, problem))
            if member.isfile() and member.size > LARGE_FILE:
                warnings.append('%s: large file (%d bytes)' % (member.name, member.size))
        for required in ('MANIFEST.json', 'FILES.json'):
            if required not in names:
                errors.append('%s is missing' % required)
        if 'MANIFEST.json' in names:
            manifest_member = next(m for m in members if posixpath.normpath(m.name) == 'MANIFEST.json')
            manifest = json.load(tar.extractfile(manifest_member))
            info = manifest.get('collection_info', {})
            if (info.get('namespace'), info.get('name')) != (opts.namespace, opts.name):
                errors.append('MANIFEST.json names %s.%s' % (info.get('namespace'), info.get('name')))

    for line in warnings:
        print('check_tarball: warning: %s' % line)
    if errors:
        for line in errors:
            print('check_tarball: ERROR: %s' % line)
        print('check_tarball: %s FAILED (%d problems in %d members)' % (opts.tarball, len(errors), len(members)))
        return 1
    print('check_tarball: %s OK (%d members)' % (opts.tarball, len(members)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
