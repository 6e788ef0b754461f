#!/usr/bin/env bash
# Builds the Debian packages toxmail-bridge and toxmail-relay (cargo-deb), installs them with
# dpkg, verifies the installed systemd units, runs migrate and check-config of both daemons as
# their service users against a private PostgreSQL (the installed configuration, its database
# host pointed at that server), then removes and purges both packages and checks nothing is
# left behind. Needs root. Refuses to touch a machine where toxmail is installed or has data.
# Prints how long each step took.
#
# TOXMAIL_DEB_PROFILE=release (the default) packs optimised binaries, as shipped: a release
# build of the bridge costs minutes. TOXMAIL_DEB_PROFILE=dev (scripts/test.sh) packs the debug
# binaries the test build already made, stripped: the packaging, the units and the installed
# configuration are the same, only the code is unoptimised.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

CARGO_DEB_VERSION=3.8.0
PACKAGES=(toxmail-bridge toxmail-relay)
UNITS=(/usr/lib/systemd/system/toxmail-bridge.service /usr/lib/systemd/system/toxmail-relay.service)
# What the packages or their maintainer scripts create; each must be gone after the purge.
LEFT_BEHIND=(/usr/bin/toxmail-bridge /usr/bin/toxmail-relay "${UNITS[@]}"
  /etc/toxmail /var/lib/toxmail /var/lib/toxmail-relay /var/spool/postfix/toxmail
  /etc/systemd/system/multi-user.target.wants/toxmail-bridge.service
  /etc/systemd/system/multi-user.target.wants/toxmail-relay.service)
PG_BIN=/usr/lib/postgresql/15/bin

fail() { echo "package-check: $*" >&2; exit 1; }
step() { echo "== $1 ($(( SECONDS - started )) s)"; started=$SECONDS; }
started=$SECONDS

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
for p in "${PACKAGES[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed'; then
    fail "$p is installed here; this check would purge it with its data. Remove it first."
  fi
done
for path in "${LEFT_BEHIND[@]}"; do
  if [ -e "$path" ]; then
    fail "$path exists: toxmail data or a previous failed run? Move it away first."
  fi
done

if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
  step "installed cargo-deb $CARGO_DEB_VERSION"
fi

# One build for both packages, then cargo-deb only packs (and runs dpkg-shlibdeps).
profile=${TOXMAIL_DEB_PROFILE:-release}
case "$profile" in
  release)
    cargo build --release --locked -p toxmail-bridge -p toxmail-relay
    deb_flags=(--profile release)
    ;;
  dev)
    # The very build scripts/test.sh runs (same features), so nothing is rebuilt after it.
    cargo build --workspace --all-targets --locked
    # cargo-deb warns that it is meant for release builds; the .debs are for this check only.
    deb_flags=(--profile dev --strip --fast)
    ;;
  *) fail "TOXMAIL_DEB_PROFILE must be release or dev, not $profile" ;;
esac
step "$profile build"
out=$(mktemp -d /tmp/toxmail-debs.XXXXXX)
work=""
cleanup() {
  # On any exit: purge what this run installed, stop its PostgreSQL, delete its files.
  if [ -n "$work" ] && [ -d "$work/data" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$work/data" -m immediate >/dev/null 2>&1 || true
  fi
  dpkg -P "${PACKAGES[@]}" >/dev/null 2>&1 || true
  rm -rf "$out" "$work"
}
trap cleanup EXIT
for p in "${PACKAGES[@]}"; do
  if ! log=$(cargo deb --no-build --locked "${deb_flags[@]}" -p "$p" --output "$out/" 2>&1); then
    echo "$log" >&2
    fail "cargo deb -p $p failed"
  fi
done
ls "$out"/*.deb
step "packed both .debs ($profile)"

for deb in "$out"/*.deb; do
  echo "$(basename "$deb"): $(dpkg-deb -f "$deb" Depends)"
done
dpkg -i "$out"/toxmail-bridge_*.deb "$out"/toxmail-relay_*.deb
step "dpkg -i"

# Our units must verify without a word (the binaries they name are installed now).
verify=$(systemd-analyze verify "${UNITS[@]}" 2>&1) || fail "systemd-analyze verify failed: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
for u in toxmail-bridge toxmail-relay; do
  [ -L "/etc/systemd/system/multi-user.target.wants/$u.service" ] || fail "$u is not enabled"
done
[ "$(stat -c '%U:%G %a' /etc/toxmail/bridge.key)" = "toxmail:toxmail 600" ] \
  || fail "bridge.key: $(stat -c '%U:%G %a' /etc/toxmail/bridge.key)"
[ "$(stat -c '%U:%G %a' /etc/toxmail/bridge.toml)" = "root:toxmail 640" ] \
  || fail "bridge.toml: $(stat -c '%U:%G %a' /etc/toxmail/bridge.toml)"
[ "$(stat -c '%U:%G %a' /var/lib/toxmail)" = "toxmail:toxmail 750" ] || fail "/var/lib/toxmail"
step "systemd-analyze verify, users, modes"

# A private PostgreSQL on a UNIX socket only, in a directory of its own: nothing on this
# machine can reach it or be reached by it.
work=$(mktemp -d /tmp/toxmail-package-check.XXXXXX)
chmod 755 "$work"
install -d -o postgres -g postgres -m 755 "$work/sock"
install -d -o postgres -g postgres -m 700 "$work/data"
runuser -u postgres -- "$PG_BIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" start -w -D "$work/data" -l "$work/data/log" \
  -o "-c listen_addresses='' -c unix_socket_directories='$work/sock'" >/dev/null
psql=(runuser -u postgres -- psql -qX -v ON_ERROR_STOP=1 -h "$work/sock" -U postgres -d postgres)
"${psql[@]}" -c "CREATE ROLE toxmail LOGIN" -c "CREATE DATABASE toxmail OWNER toxmail" \
  -c "CREATE ROLE toxrelay LOGIN" -c "CREATE DATABASE toxrelay OWNER toxrelay"
step "private PostgreSQL"

# The installed configurations, edited in place (sed keeps owner and mode) as an operator
# would: the database host is the private server, and the bridge gets a bootstrap node.
sed -i "s|host=/var/run/postgresql|host=$work/sock|" /etc/toxmail/bridge.toml /etc/toxmail/relay.toml
sed -i 's|^# bootstrap = \[{ address = "127.0.0.1:33445", key = "<64 hex DHT key>" }\]$|bootstrap = [{ address = "127.0.0.1:33445", key = "'"$(printf '%064d' 1)"'" }]|' \
  /etc/toxmail/bridge.toml
grep -q '^bootstrap = ' /etc/toxmail/bridge.toml || fail "no bootstrap line to enable in bridge.toml"
in_loopback_namespace runuser -u toxmail -- toxmail-bridge migrate
in_loopback_namespace runuser -u toxmail -- toxmail-bridge check-config
in_loopback_namespace runuser -u toxrelay -- toxmail-relay migrate
in_loopback_namespace runuser -u toxrelay -- toxmail-relay check-config
step "migrate and check-config as the service users"

# Installing again (the upgrade path) keeps the key, the edited configuration and its mode.
key_sum=$(sha256sum /etc/toxmail/bridge.key)
dpkg -i --force-confold "$out"/toxmail-bridge_*.deb "$out"/toxmail-relay_*.deb >/dev/null
[ "$(sha256sum /etc/toxmail/bridge.key)" = "$key_sum" ] || fail "reinstalling replaced bridge.key"
grep -q '^bootstrap = ' /etc/toxmail/bridge.toml || fail "reinstalling replaced the edited bridge.toml"
[ "$(stat -c '%U:%G %a' /etc/toxmail/bridge.toml)" = "root:toxmail 640" ] \
  || fail "bridge.toml after reinstalling: $(stat -c '%U:%G %a' /etc/toxmail/bridge.toml)"
in_loopback_namespace runuser -u toxmail -- toxmail-bridge check-config >/dev/null
step "dpkg -i again: key, configuration and modes kept"

runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$work/data" -m fast >/dev/null
dpkg -r "${PACKAGES[@]}"
for path in /usr/bin/toxmail-bridge /usr/bin/toxmail-relay "${UNITS[@]}"; do
  if [ -e "$path" ]; then fail "$path is still there after dpkg -r"; fi
done
[ -e /etc/toxmail/bridge.toml ] || fail "dpkg -r removed the conffile bridge.toml"
dpkg -P "${PACKAGES[@]}"
for path in "${LEFT_BEHIND[@]}"; do
  if [ -e "$path" ] || [ -L "$path" ]; then fail "$path is still there after dpkg -P"; fi
done
step "dpkg -r and -P, nothing left"
echo "package-check: OK"
