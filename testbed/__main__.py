"""Command line of the testbed: python -m testbed up|connect|verify|status|down --state-dir DIR [--prefix P].

Each command prints one JSON document on stdout (what the playbooks read) and exits 0, or prints
``testbed: <what failed>`` on stderr and exits 1 (2 for bad arguments).
"""

import argparse
import json
import sys
import time

from testbed.testbed import MAX_SITES, Testbed, TestbedError


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m testbed' if sys.argv[0].endswith('.py') else None,
                                     description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('command', choices=['up', 'connect', 'verify', 'status', 'down'])
    parser.add_argument('--state-dir', required=True, help='directory holding the testbed state (created by up, removed by down)')
    parser.add_argument('--prefix', default='qtb', help='name prefix of the namespaces (default qtb): <prefix>-core, <prefix>-site-NNN')
    parser.add_argument('--sites', type=int, help='up: number of sites, 2..%d (a running testbed grows to it)' % MAX_SITES)
    parser.add_argument('--policy', help='up: every link\'s key policy, a name (qkd+pqc) or JSON '
                        '({"require": ["qkd", "pqc"], "on_missing": "degrade"}); default: the recorded one, qkd+pqc for a new testbed')
    parser.add_argument('--no-connect', action='store_true', help='connect: only verify the SAs (push mode loaded and started them)')
    args = parser.parse_args(argv)
    if args.command == 'up' and args.sites is None:
        parser.error('up needs --sites')
    policy = None
    if args.policy is not None:
        try:
            policy = json.loads(args.policy)
        except ValueError:
            policy = args.policy        # a bare name, e.g. --policy qkd+pqc
    started = time.perf_counter()
    try:
        testbed = Testbed(args.state_dir, args.prefix)
        if args.command == 'up':
            result = testbed.up_infra(args.sites, policy)
        elif args.command == 'connect':
            result = {} if args.no_connect else testbed.connect()
            with testbed.phases.timed('verify'):
                result['verify'] = testbed.verify()
            result['phases'] = testbed.phases.seconds
            if not result['verify']['ok']:
                json.dump(result, sys.stdout, indent=1, sort_keys=True)
                sys.stdout.write('\n')
                sys.stderr.write('testbed: verification failed: %s\n' % '; '.join(result['verify']['problems'][:10]))
                return 1
        elif args.command == 'verify':
            result = testbed.verify()
        elif args.command == 'status':
            result = testbed.status()
        else:
            result = testbed.down()
    except TestbedError as error:
        sys.stderr.write('testbed: %s: %s\n' % (args.command, error))
        return 1
    result['seconds'] = round(time.perf_counter() - started, 3)
    if args.command in ('up', 'connect'):
        # one line per step for the measurements (benchmarks/bench_testbed.py); public data only
        with open(testbed.path('runs.jsonl'), 'a') as handle:
            handle.write(json.dumps(dict(result, command=args.command, time=time.time()), sort_keys=True) + '\n')
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write('\n')
    return 0 if result.get('ok', True) else 1


if __name__ == '__main__':
    sys.exit(main())
