#!/usr/bin/env bash
# The coordinator VM: the API on the management address only, the CLI, and
# enrollment tokens for every other VM.
source /vagrant/vagrant/provision/lib.sh

install_program coordinator
install_program cli

# Listen on the management network (not on 192.0.2.100, the VM's "internet"
# side), with the lab's admin token.
env_file=/etc/netwall/coordinator.env
want="NETWALL_LISTEN=$NETWALL_MGMT_IP:7300
NETWALL_ADMIN_TOKEN=$NETWALL_LAB_ADMIN_TOKEN"
if [ "$(cat "$env_file" 2>/dev/null)" != "$want" ]; then
  say "writing $env_file"
  install -m 0600 /dev/null "$env_file"
  printf '%s\n' "$want" > "$env_file"
  systemctl restart netwall-coordinator.service
fi
wait_coordinator
say "coordinator up at $COORD"

# Lab firewall: only the management subnet may reach the API. (The agent's
# nftables table does this on nodes; the coordinator VM runs no agent.)
nft -f - <<NFT
table inet netwall-coordinator-lab
delete table inet netwall-coordinator-lab
table inet netwall-coordinator-lab {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7300 ip saddr != 10.77.0.0/24 counter drop
  }
}
NFT

# Enrollment tokens for the others, left in the synced folder (used when it
# is two-way; otherwise each VM mints its own with the lab admin token).
mkdir -p "$TOKENS" 2>/dev/null || true
if [ -w "$TOKENS" ]; then
  export NETWALL_URL="$COORD" NETWALL_TOKEN="$NETWALL_LAB_ADMIN_TOKEN"
  for n in $NETWALL_NODES; do
    [ -s "$TOKENS/$n.token" ] || netwall enroll-token create --kind node --name "$n" --ttl 1h --json | jq -r .token > "$TOKENS/$n.token"
  done
  for g in $NETWALL_GATEWAYS; do
    [ -s "$TOKENS/$g.token" ] || netwall enroll-token create --kind gateway --name "$g" --ttl 1h --json | jq -r .token > "$TOKENS/$g.token"
  done
  chmod 0600 "$TOKENS"/*.token 2>/dev/null || true
  say "enrollment tokens in $TOKENS"
fi
