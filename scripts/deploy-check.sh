#!/usr/bin/env bash
# Checks the deployment files that no Rust test covers (scripts/test.sh runs it last):
#   - docker-compose.yml, and the mailcow overlay on a stub of mailcow's base file, with
#     `docker-compose config -q` (Debian 12's docker-compose 1.29.2; no Docker engine is needed
#     or used, so nothing is built or started);
#   - shellcheck on every shell script in deploy/ and on this one;
#   - deploy/zimbra/toxmail-zimbra.sh against stub zmprov/zmhostname/zmmtactl: the socketmap goes
#     ahead of the current tables, the milter after the current ones, --dry-run changes nothing,
#     and a second run changes nothing;
#   - deploy/docker-mailserver/user-patches.sh against a private Postfix config dir, twice;
#   - deploy/docker/bridge-start.sh puts the relay (from a relay.id) under [tox] as bootstrap node;
#   - deploy/docker/ready.sh against a small HTTP server on 127.0.0.1 answering 200, then 503.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "deploy-check: $*" >&2; exit 1; }

echo "deploy-check: compose files"
docker-compose -f docker-compose.yml config -q
docker-compose -f deploy/mailcow/test-base.yml -f deploy/mailcow/docker-compose.override.yml config -q

echo "deploy-check: shellcheck"
shellcheck deploy/docker/*.sh deploy/zimbra/*.sh deploy/mailcow/*.sh deploy/docker-mailserver/*.sh scripts/deploy-check.sh

echo "deploy-check: toxmail-zimbra.sh"
mkdir -p "$tmp/zimbra/bin"
cat > "$tmp/zimbra/bin/zmhostname" <<'STUB'
#!/bin/sh
echo mx.test
STUB
# gs prints the value kept in $ZFAKE/<attribute>; ms stores it and logs the call.
cat > "$tmp/zimbra/bin/zmprov" <<'STUB'
#!/bin/sh
case "$1" in
  gs) printf '# name %s\n' "$2"; [ -s "$ZFAKE/$3" ] && printf '%s: %s\n' "$3" "$(cat "$ZFAKE/$3")"; echo ;;
  ms) printf '%s' "$4" > "$ZFAKE/$3"; echo "zmprov $*" >> "$ZFAKE/log" ;;
  *) exit 1 ;;
esac
STUB
cat > "$tmp/zimbra/bin/zmmtactl" <<'STUB'
#!/bin/sh
echo "zmmtactl $*" >> "$ZFAKE/log"
STUB
cat > "$tmp/zimbra/bin/postconf" <<'STUB'
#!/bin/sh
echo yes
STUB
chmod +x "$tmp/zimbra/bin/"*
export ZFAKE=$tmp/zimbra
z=$ZFAKE
printf 'smtp inet n - n - - smtpd\n' > "$z/master.cf.in"
printf 'proxy:ldap:/opt/zimbra/conf/ldap-transport.cf' > "$z/zimbraMtaTransportMaps"
printf 'inet:127.0.0.1:8465' > "$z/zimbraMtaSmtpdMilters"
zimbra() {
  PATH="$z/bin:$PATH" "$root/deploy/zimbra/toxmail-zimbra.sh" --milter inet:127.0.0.1:8892 \
    --master-cf-in "$z/master.cf.in" "$@"
}
sm="socketmap:inet:127.0.0.1:9025:transport"
before=$(cat "$z/master.cf.in" "$z/zimbraMtaTransportMaps" "$z/zimbraMtaSmtpdMilters")
dry=$(zimbra --dry-run)
[ "$before" = "$(cat "$z/master.cf.in" "$z/zimbraMtaTransportMaps" "$z/zimbraMtaSmtpdMilters")" ] \
  || fail "--dry-run changed something"
[ ! -e "$z/log" ] || fail "--dry-run ran: $(cat "$z/log")"
grep -qF "zimbraMtaTransportMaps $sm\\,\\ proxy:ldap:" <<<"$dry" || fail "dry run: $dry"
zimbra >/dev/null
[ "$(cat "$z/zimbraMtaTransportMaps")" = "$sm, proxy:ldap:/opt/zimbra/conf/ldap-transport.cf" ] \
  || fail "transport maps: $(cat "$z/zimbraMtaTransportMaps")"
[ "$(cat "$z/zimbraMtaSmtpdMilters")" = "inet:127.0.0.1:8465, { inet:127.0.0.1:8892, default_action=accept }" ] \
  || fail "milters: $(cat "$z/zimbraMtaSmtpdMilters")"
[ "$(grep -c '^toxlmtp ' "$z/master.cf.in")" = 1 ] || fail "master.cf.in: $(cat "$z/master.cf.in")"
grep -q '^smtp inet' "$z/master.cf.in" || fail "master.cf.in lost its own services"
after=$(cat "$z/master.cf.in" "$z/zimbraMtaTransportMaps" "$z/zimbraMtaSmtpdMilters")
rm "$z/log"
zimbra >/dev/null
[ ! -e "$z/log" ] || fail "second run changed something: $(cat "$z/log")"
[ "$after" = "$(cat "$z/master.cf.in" "$z/zimbraMtaTransportMaps" "$z/zimbraMtaSmtpdMilters")" ] \
  || fail "second run changed the files"
# A socketmap already listed later is moved ahead, once.
printf 'hash:/t, %s' "$sm" > "$z/zimbraMtaTransportMaps"
zimbra >/dev/null
[ "$(cat "$z/zimbraMtaTransportMaps")" = "$sm, hash:/t" ] || fail "moved: $(cat "$z/zimbraMtaTransportMaps")"

echo "deploy-check: docker-mailserver user-patches.sh"
# Against the real postconf of a private config dir (MAIL_CONFIG), twice.
mkdir "$tmp/dms"
cp /etc/postfix/master.cf "$tmp/dms/"
printf 'compatibility_level = 3.6\nmyhostname = mx.test\ntransport_maps = texthash:/etc/postfix/transport\n' > "$tmp/dms/main.cf"
MAIL_CONFIG=$tmp/dms deploy/docker-mailserver/user-patches.sh
MAIL_CONFIG=$tmp/dms deploy/docker-mailserver/user-patches.sh
[ "$(postconf -c "$tmp/dms" -h transport_maps)" = "$sm, texthash:/etc/postfix/transport" ] \
  || fail "user-patches.sh: $(postconf -c "$tmp/dms" -h transport_maps)"
[ "$(grep -c '^toxlmtp ' "$tmp/dms/master.cf")" = 1 ] || fail "user-patches.sh: toxlmtp"
touch -d '1 minute ago' "$tmp/dms/main.cf" "$tmp/dms/master.cf"   # else postconf waits for a writer
[ -z "$(postconf -c "$tmp/dms" -n 2>&1 >/dev/null)" ] || fail "postconf warns: $(postconf -c "$tmp/dms" -n 2>&1 >/dev/null)"

echo "deploy-check: bridge-start.sh"
mkdir -p "$tmp/start/bin"
key=$(printf 'AB%.0s' $(seq 32))
printf 'tox_id X\ndht_key %s\nudp_port 33445\n' "$key" > "$tmp/start/relay.id"
sed "s|^key_file = .*|key_file = \"$tmp/start/bridge.key\"|" deploy/docker/bridge.toml > "$tmp/start/bridge.toml"
cat > "$tmp/start/bin/toxmail-bridge" <<'STUB'
#!/bin/sh
echo "$*" >> "$(dirname "$0")/../calls"
STUB
chmod +x "$tmp/start/bin/toxmail-bridge"
PATH="$tmp/start/bin:$PATH" TOXMAIL_CONFIG=$tmp/start/bridge.toml TOXMAIL_RUN_CONFIG=$tmp/start/run.toml \
  TOXMAIL_RELAY_ID=$tmp/start/relay.id TOXMAIL_WAIT_SECS=1 deploy/docker/bridge-start.sh >/dev/null
[ "$(stat -c %a "$tmp/start/bridge.key")" = 600 ] || fail "key file mode"
[ "$(stat -c %s "$tmp/start/bridge.key")" = 32 ] || fail "key file size"
grep -A1 '^\[tox\]' "$tmp/start/run.toml" | grep -qF "bootstrap = [{ address = \"127.0.0.1:33445\", key = \"$key\" }]" \
  || fail "no bootstrap under [tox]: $(cat "$tmp/start/run.toml")"
[ "$(cat "$tmp/start/calls")" = "--config $tmp/start/run.toml migrate
--config $tmp/start/run.toml run" ] || fail "calls: $(cat "$tmp/start/calls")"
# The real binary parses the result (postfix-config needs no database).
bridge=${CARGO_TARGET_DIR:-target}/debug/toxmail-bridge
if [ -x "$bridge" ]; then
  "$bridge" --config "$tmp/start/run.toml" postfix-config >/dev/null || fail "run.toml does not parse"
fi

echo "deploy-check: ready.sh"
cat > "$tmp/server.py" <<'PY'
import http.server, os, sys
class Readyz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists(sys.argv[2])
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Readyz)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
PY
touch "$tmp/ready"
python3 "$tmp/server.py" "$tmp/port" "$tmp/ready" &
server_pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || fail "test HTTP server did not start"
port=$(cat "$tmp/port")
deploy/docker/ready.sh "$port" || fail "ready.sh: 200 not taken as ready"
rm "$tmp/ready"
if deploy/docker/ready.sh "$port" 2>/dev/null; then fail "ready.sh: 503 taken as ready"; fi

echo "deploy-check: all good"
