#!/usr/bin/env bash
# The demo of the netns lab (tenants acme and globex, ...) on the VMs:
#   vagrant provision coordinator --provision-with demo
# This only hands over to /vagrant/scripts/demo-setup, the same script the
# netns lab uses; it is not part of the deployment files.
source /vagrant/vagrant/provision/lib.sh

if [ ! -x /vagrant/scripts/demo-setup ]; then
  say "no /vagrant/scripts/demo-setup in this checkout: nothing to do."
  say "By hand: NETWALL_URL=$COORD NETWALL_TOKEN=\$(cat /vagrant/.lab/vagrant/admin.token) netwall tenant create acme"
  exit 0
fi
wait_coordinator
NETWALL_URL="$COORD" NETWALL_TOKEN="$NETWALL_LAB_ADMIN_TOKEN" \
NETWALL_NODES="$NETWALL_NODES" NETWALL_GATEWAYS="$NETWALL_GATEWAYS" \
NETWALL_PUBLIC_CLIENT_IP="$NETWALL_PUBLIC_IP" \
  /vagrant/scripts/demo-setup
