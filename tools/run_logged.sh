#!/usr/bin/env bash
# Run a noisy command with its whole output in a log file.
#   run_logged.sh LOGFILE KEEP_REGEX COMMAND [ARG...]
# On success print only the log lines matching KEEP_REGEX (an extended regex); on failure print
# the whole log (less the machine's pip-config noise about absent local indexes) and the exit code.
set -uo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 LOGFILE KEEP_REGEX COMMAND [ARG...]" >&2
    exit 2
fi

log=$1
keep=$2
shift 2
noise="^WARNING: Location 'file:///[^']*' is ignored"

mkdir -p "$(dirname "$log")"
"$@" >"$log" 2>&1 </dev/null
rc=$?

if [ "$rc" -eq 0 ]; then
    grep -E -- "$keep" "$log" | grep -v -E -- "$noise" || true
else
    grep -v -E -- "$noise" "$log" || true
    echo "FAILED (exit $rc): $*" >&2
    echo "full log: $log" >&2
fi
exit "$rc"
