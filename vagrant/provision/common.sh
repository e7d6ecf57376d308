#!/usr/bin/env bash
# Every VM: packages, Node.js >= 20.19 (+ npm), and a build of the repository
# in /opt/netwall-src (a private copy: /vagrant may be one-way rsync, and
# native modules must be built inside the VM).
source /vagrant/vagrant/provision/lib.sh

say "packages"
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl rsync git python3 make g++ jq

say "node"
/vagrant/scripts/install node
node --version

# npm: Debian 12's npm package pulls in nodejs 18, so take npm itself from the
# npm registry when this node came without one.
if ! command -v npm >/dev/null || ! npm --version >/dev/null 2>&1; then
  v=10.9.2
  say "npm $v from the registry"
  tmp="$(mktemp -d)"
  curl -fsSL --retry 3 -o "$tmp/npm.tgz" "https://registry.npmjs.org/npm/-/npm-$v.tgz"
  rm -rf /usr/local/lib/netwall-npm && mkdir -p /usr/local/lib/netwall-npm
  tar -xzf "$tmp/npm.tgz" -C /usr/local/lib/netwall-npm --strip-components=1
  ln -sfn /usr/local/lib/netwall-npm/bin/npm-cli.js /usr/local/bin/npm
  ln -sfn /usr/local/lib/netwall-npm/bin/npx-cli.js /usr/local/bin/npx
  rm -rf "$tmp"
fi
# Headers for building better-sqlite3 without downloading them.
if [ -d /usr/local/lib/netwall-node/include/node ]; then
  export npm_config_nodedir=/usr/local/lib/netwall-node
fi

say "build in $SRC"
mkdir -p "$SRC"
rsync -a --delete --exclude node_modules/ --exclude dist/ --exclude .git/ --exclude .lab/ \
  --exclude vagrant/.vagrant/ /vagrant/ "$SRC/"
cd "$SRC"
lock="$(sha256sum package-lock.json | cut -d' ' -f1)-$(node -p process.versions.modules)"
if [ "$(cat node_modules/.netwall-lock 2>/dev/null)" != "$lock" ]; then
  npm ci --no-audit --no-fund
  echo "$lock" > node_modules/.netwall-lock
fi
rm -rf dist
npm run build
say "built $(git -C /vagrant rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
