#!/usr/bin/env python
"""Install standard Ansible collections from the `ansible` wheel on PyPI, without Galaxy.

    python tools/network_collections.py --requirement tools/network_collections.txt \\
        --cache .build/cache --dest .build/network_collections cisco.ios junipernetworks.junos

Push mode's tests need cisco.ios, junipernetworks.junos and what they depend on. Ansible Galaxy is
not reachable from the project's machines, but the PyPI package `ansible` bundles those collections.
This downloads the one release pinned (with its hash) in --requirement with `pip download --no-deps`
into --cache (a rerun finds it there and downloads nothing), and extracts only the named collections
and, transitively, the collections their MANIFEST.json declares as dependencies (each checked against
its version range) into --dest/ansible_collections/<namespace>/<name>/, for ANSIBLE_COLLECTIONS_PATH.
The `ansible` package itself is never installed. A --dest already holding the same selection from the
same release is left as it is.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from ansible.galaxy.dependency_resolution.versioning import meets_requirements

STAMP = '.installed.json'


def pinned_version(requirement_file):
    with open(requirement_file) as handle:
        pins = re.findall(r'(?m)^ansible==(\S+)', handle.read())
    if len(pins) != 1:
        sys.exit('%s: needs exactly one line ansible==<version> --hash=sha256:<digest>' % requirement_file)
    return pins[0]


def wheel(requirement_file, version, cache):
    path = os.path.join(cache, 'ansible-%s-py3-none-any.whl' % version)
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        done = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--require-hashes',
                               '--only-binary', ':all:', '-r', requirement_file, '-d', cache],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0 or not os.path.exists(path):
            sys.exit('pip download of ansible==%s failed:\n%s' % (version, done.stdout.decode('utf-8', 'replace')))
    return path


def manifests(archive):
    """{namespace.name: collection_info} of every collection in the wheel."""
    found = {}
    for member in archive.namelist():
        parts = member.split('/')
        if len(parts) == 4 and parts[0] == 'ansible_collections' and parts[3] == 'MANIFEST.json':
            info = json.loads(archive.read(member))['collection_info']
            found['%s.%s' % (info['namespace'], info['name'])] = info
    return found


def resolve(wanted, available):
    """The wanted collections and their dependencies, each dependency's version range checked."""
    selected, todo = {}, list(wanted)
    while todo:
        name = todo.pop()
        if name in selected:
            continue
        if name not in available:
            sys.exit('collection %s is not in the ansible wheel' % name)
        selected[name] = available[name]['version']
        for dependency, versions in sorted(available[name].get('dependencies', {}).items()):
            if dependency not in available:
                sys.exit('%s needs %s, which is not in the ansible wheel' % (name, dependency))
            if not meets_requirements(available[dependency]['version'], versions):
                sys.exit('%s needs %s %s; the wheel has %s' % (name, dependency, versions, available[dependency]['version']))
            todo.append(dependency)
    return dict(sorted(selected.items()))


def extract(archive, selected, target):
    prefixes = tuple('ansible_collections/%s/' % name.replace('.', '/') for name in selected)
    for member in archive.infolist():
        if member.filename.startswith(prefixes):
            if member.filename.startswith('/') or '..' in member.filename.split('/'):
                sys.exit('unsafe path in the ansible wheel: %s' % member.filename)
            archive.extract(member, target)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--requirement', required=True, help='pip requirements file pinning ansible==<version> with its hash')
    parser.add_argument('--cache', required=True, help='directory that keeps the downloaded wheel')
    parser.add_argument('--dest', required=True, help='collections directory to (re)create; it gets ansible_collections/')
    parser.add_argument('collections', nargs='+', help='namespace.name of each collection wanted')
    args = parser.parse_args()

    version = pinned_version(args.requirement)
    stamp = os.path.join(args.dest, STAMP)
    if os.path.exists(stamp):
        with open(stamp) as handle:
            installed = json.load(handle)
        if installed.get('ansible') == version and installed.get('wanted') == sorted(args.collections):
            print('network collections: up to date in %s (ansible %s)' % (args.dest, version))
            return
    with zipfile.ZipFile(wheel(args.requirement, version, args.cache)) as archive:
        selected = resolve(sorted(args.collections), manifests(archive))
        parent = os.path.dirname(os.path.abspath(args.dest))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix='.network_collections-', dir=parent)
        try:
            extract(archive, selected, staging)
            with open(os.path.join(staging, STAMP), 'w') as handle:
                json.dump(dict(ansible=version, wanted=sorted(args.collections), collections=selected), handle, indent=1)
            shutil.rmtree(args.dest, ignore_errors=True)
            os.rename(staging, args.dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    print('network collections from ansible %s: %s -> %s' % (
        version, ', '.join('%s %s' % item for item in selected.items()), args.dest))


if __name__ == '__main__':
    main()
