#!/usr/bin/env bash
# The demo of the netns lab (tenants acme and globex, their containers,
# exposures and egress) on the VMs, once every VM is up:
#   vagrant provision coordinator --provision-with demo   # tenants, policies, exposures, egress
#   vagrant provision node1 node2 --provision-with demo   # the containers scripts/demo.json places there
# The same scripts/demo-setup and scripts/demo.json the netns lab uses; not
# part of the deployment files.
source /vagrant/vagrant/provision/lib.sh

case "$NETWALL_ROLE" in
  coordinator)
    wait_coordinator
    # The coordinator VM's public address plays the internet web server here.
    NETWALL_URL="$COORD" NETWALL_TOKEN="$NETWALL_LAB_ADMIN_TOKEN" NETWALL_GATEWAYS="$NETWALL_GATEWAYS" \
    NETWALL_INTERNET_WEB="$NETWALL_PUBLIC_IP" \
      /vagrant/scripts/demo-setup
    if ! pgrep -f "busybox httpd -p $NETWALL_PUBLIC_IP:80" >/dev/null; then
      apt-get install -y -q --no-install-recommends busybox-static
      mkdir -p /var/lib/netwall-demo/www && echo 'hello from the internet' >/var/lib/netwall-demo/www/index.html
      busybox httpd -p "$NETWALL_PUBLIC_IP:80" -h /var/lib/netwall-demo/www
    fi
    ;;
  agent)
    /vagrant/scripts/demo-containers "$NETWALL_NAME"
    ;;
  *)
    say "nothing to do for role $NETWALL_ROLE"
    ;;
esac
