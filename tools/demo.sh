#!/usr/bin/env bash
# make demo: start the simulated QKD network, key one QKD link with the collection's
# playbook (master gets a new key, slave gets it by key_ID), show key IDs and check values,
# then stop the network. Everything lives in .demo/ (removed by `make clean`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=.venv/bin/python
state=.demo/qkdsim
mkdir -p "$state"
rm -f "$state/endpoints.json"

echo "== Starting the simulated QKD network (five sites of the banking paper; log: $state/qkdsim.log)"
.venv/bin/qkdsim --state-dir "$state" --log-file "$state/qkdsim.log" &   # the console script make venv installs
sim_pid=$!
stop_sim() {
  if kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid"
    wait "$sim_pid" 2>/dev/null || true
    echo "== Simulated QKD network stopped"
  fi
}
trap stop_sim EXIT

for _ in $(seq 1 300); do
  [ -s "$state/endpoints.json" ] && break
  kill -0 "$sim_pid" 2>/dev/null || { echo "qkdsim exited early; see $state/qkdsim.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$state/endpoints.json" ] || { echo "qkdsim did not come up within 30 s" >&2; exit 1; }
"$python" - "$state/endpoints.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
print('   KMEs:  ' + ', '.join('%s %s' % (k, v['interfaces']['etsi014']['url']) for k, v in sorted(manifest['kmes'].items())))
print('   QKD links: ' + ', '.join('%s (%s, %d bit/s)' % (l['link_id'], l['technology'], l['key_rate_bps']) for l in manifest['links']))
PY

echo "== Keying the MAD-1 <-> MAD-2 QKD link with playbooks/qkd_key_pair.yml"
export ANSIBLE_COLLECTIONS_PATH="$root/.build" ANSIBLE_PYTHON_INTERPRETER="$root/$python"
export ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False
.venv/bin/ansible-playbook -i localhost, playbooks/qkd_key_pair.yml \
  -e qsafe_endpoints_file="$root/$state/endpoints.json" \
  -e qsafe_master_sae=SAE-MAD-1 -e qsafe_slave_sae=SAE-MAD-2 \
  -e qsafe_key_dir="$root/.demo/keys" -e qsafe_key_force=true
echo "== The keys are in .demo/keys/ (mode 0600); the output above shows only key IDs and check values."

echo "== Rolling out the paper's five-site mesh (render mode): playbooks/full_mesh.yml"
.venv/bin/ansible-playbook -i playbooks/inventories/paper playbooks/full_mesh.yml \
  -e qsafe_endpoints_file="$root/$state/endpoints.json" \
  -e qsafe_key_store="$root/.demo/keystore" -e qsafe_output_dir="$root/.demo/rendered"
echo "== Rendered configurations (mode 0600, they hold PPKs and CAKs):"
(cd .demo/rendered && find . -type f | sort | sed 's|^\./|   .demo/rendered/|')
echo "== Run 'make demo' again: the mesh keeps its keys (the key store) and nothing changes."
