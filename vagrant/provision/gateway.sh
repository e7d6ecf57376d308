#!/usr/bin/env bash
# A gateway: public side on 192.0.2.0/24, mesh side on the management network.
source /vagrant/vagrant/provision/lib.sh

install_program gateway
install_program cli

state=/var/lib/netwall/gateway
if [ -z "$(ls -A "$state" 2>/dev/null)" ]; then
  wait_coordinator
  token="$(enroll_token gateway "$NETWALL_NAME")"
  say "enrolling $NETWALL_NAME"
  netwall-gateway enroll --coordinator "$COORD" --token "$token" --name "$NETWALL_NAME" \
    --endpoint "$NETWALL_MGMT_IP:51820" --state-dir "$state"
fi
systemctl enable --now netwall-gateway.service
systemctl is-active netwall-gateway.service
