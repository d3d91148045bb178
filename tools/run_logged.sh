#!/usr/bin/env bash
# Run a noisy command with its whole output in a log file.
#   run_logged.sh LOGFILE KEEP_REGEX COMMAND [ARG...]
# On success print only the log lines matching KEEP_REGEX (an extended regex); on failure print
# the whole log (less the machine's pip-config noise about absent local indexes and pip's progress
# lines from installs that worked) and the exit code; the unfiltered log stays in LOGFILE.
set -uo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 LOGFILE KEEP_REGEX COMMAND [ARG...]" >&2
    exit 2
fi

log=$1
keep=$2
shift 2
noise="^WARNING: Location 'file:///[^']*' is ignored"
# pip's progress chatter from installs that worked (a failing install still shows its errors)
pip_chatter="^(Collecting |  Downloading |  Using cached |Processing |Installing collected packages|Successfully installed|Looking in (indexes|links)|Requirement already satisfied| +━|  Attempting uninstall|    Found existing installation|    Not uninstalling |    Can't uninstall )"

mkdir -p "$(dirname "$log")"
"$@" >"$log" 2>&1 </dev/null
rc=$?

if [ "$rc" -eq 0 ]; then
    grep -E -- "$keep" "$log" | grep -v -E -- "$noise" || true
else
    grep -v -E -- "$noise" "$log" | grep -v -E -- "$pip_chatter" || true
    echo "FAILED (exit $rc): $*" >&2
    echo "full log: $log" >&2
fi
exit "$rc"
