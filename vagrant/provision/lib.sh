# Helpers sourced by the other provisioning scripts (from the synced folder;
# Vagrant uploads only the script it runs). Lab use only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SRC=/opt/netwall-src                 # private build copy of /vagrant
TOKENS=/vagrant/.lab/vagrant/tokens  # enrollment tokens from the coordinator
COORD="${NETWALL_COORDINATOR_URL:-http://10.77.0.10:7300}"

say() { echo "[provision $(hostname)] $*"; }

# Wait for the coordinator API (the VMs come up one after the other, or in
# parallel with libvirt).
wait_coordinator() {
  local i
  for i in $(seq 1 120); do
    if curl -fsS --max-time 3 "$COORD/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 5
  done
  say "coordinator $COORD did not answer /healthz within 10 minutes"; return 1
}

# An enrollment token for this host: the one the coordinator left in the
# synced folder if the folder is two-way, otherwise minted now with the lab
# admin token over the management network.
enroll_token() { # kind name
  local kind="$1" name="$2" f="$TOKENS/$2.token"
  if [ -s "$f" ] && [ "$(stat -c %Y "$f")" -gt "$(( $(date +%s) - 3000 ))" ]; then
    cat "$f"; rm -f "$f" 2>/dev/null || true; return 0
  fi
  NETWALL_URL="$COORD" NETWALL_TOKEN="$NETWALL_LAB_ADMIN_TOKEN" \
    netwall enroll-token create --kind "$kind" --name "$name" --ttl 1h --json |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))'
}

# Install the program with the repository's own installer (same code path as
# a real deployment), from the build made by common.sh.
install_program() { # coordinator|agent|gateway|cli
  "$SRC/scripts/install" "$1" --from "$SRC"
}
