#!/bin/sh
# Starts toxmail-bridge in docker-compose.yml: makes the key file on the first start, adds the
# site's own relay as the bridge's Tox bootstrap node (read from the relay's relay.id, which the
# relay writes when it runs), applies migrations, then runs the daemon.
#
#   TOXMAIL_CONFIG     the operator's bridge.toml (default /etc/toxmail/bridge.toml, read-only)
#   TOXMAIL_RELAY_ID   the relay's relay.id ("dht_key …" and "udp_port …" lines); unset: no relay
#   TOXMAIL_RELAY_HOST the relay's IP address as the bridge reaches it (default 127.0.0.1)
#   TOXMAIL_RUN_CONFIG where the config actually run is written (default in the state volume)
#   TOXMAIL_WAIT_SECS  how long to wait for relay.id (default 120)
set -eu

config=${TOXMAIL_CONFIG:-/etc/toxmail/bridge.toml}
run_config=${TOXMAIL_RUN_CONFIG:-/var/lib/toxmail/bridge.run.toml}
relay_host=${TOXMAIL_RELAY_HOST:-127.0.0.1}
wait_secs=${TOXMAIL_WAIT_SECS:-120}

# The key file encrypts the identities' savedata; it lives in the state volume with them.
key_file=$(sed -n 's/^key_file *= *"\([^"]*\)".*/\1/p' "$config")
if [ -n "$key_file" ] && [ ! -e "$key_file" ]; then
  (umask 077 && head -c 32 /dev/urandom > "$key_file")
  echo "bridge-start: made the key file $key_file (back it up with the state volume)"
fi

if [ -n "${TOXMAIL_RELAY_ID:-}" ]; then
  waited=0
  until [ -s "$TOXMAIL_RELAY_ID" ]; do
    if [ "$waited" -ge "$wait_secs" ]; then
      echo "bridge-start: $TOXMAIL_RELAY_ID did not appear in ${wait_secs}s: is the relay running?" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  key=$(sed -n 's/^dht_key \([0-9A-Fa-f]\{64\}\)$/\1/p' "$TOXMAIL_RELAY_ID")
  port=$(sed -n 's/^udp_port \([0-9]\{1,5\}\)$/\1/p' "$TOXMAIL_RELAY_ID")
  if [ -z "$key" ] || [ -z "$port" ] || [ "$port" -eq 0 ]; then
    echo "bridge-start: no dht_key/udp_port in $TOXMAIL_RELAY_ID" >&2
    exit 1
  fi
  if grep -q '^bootstrap *=' "$config"; then
    echo "bridge-start: $config sets [tox] bootstrap itself; the relay is not added" >&2
    cp "$config" "$run_config"
  else
    entry="bootstrap = [{ address = \"$relay_host:$port\", key = \"$key\" }]   # the site's relay (bridge-start.sh)"
    awk -v entry="$entry" '{ print } /^\[tox\][[:space:]]*(#.*)?$/ { print entry; done = 1 }
      END { if (!done) print "\n[tox]\n" entry }' "$config" > "$run_config"
  fi
  config=$run_config
fi

toxmail-bridge --config "$config" migrate
exec toxmail-bridge --config "$config" run
