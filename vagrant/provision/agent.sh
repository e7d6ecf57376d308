#!/usr/bin/env bash
# A container node: the agent, podman with the CNI backend (as in the netns
# lab), enrolled with the coordinator.
source /vagrant/vagrant/provision/lib.sh

apt-get install -y -q --no-install-recommends podman runc containernetworking-plugins busybox-static
install_program agent
install_program cli

state=/var/lib/netwall/agent
if [ -z "$(ls -A "$state" 2>/dev/null)" ]; then
  wait_coordinator
  token="$(enroll_token node "$NETWALL_NAME")"
  say "enrolling $NETWALL_NAME"
  netwall-agent enroll --coordinator "$COORD" --token "$token" --name "$NETWALL_NAME" \
    --endpoint "$NETWALL_MGMT_IP:51820" --state-dir "$state"
fi
systemctl enable --now netwall-agent.service
systemctl is-active netwall-agent.service
