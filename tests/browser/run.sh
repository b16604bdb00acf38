#!/usr/bin/env bash
# Browser end-to-end tests of restrictive-firewall mode: real headless Chromium (and aiortc)
# inside a network namespace whose egress drops EVERY UDP packet (nft netdev egress hook on
# its veth), watching the gateway's video through the embedded TURN relay (TLS and TCP on
# 443) or through a real coturn. Also a control run without the firewall, a WHEP client with
# revocation, and "expected failure" variants that break one link on purpose and check the
# diagnosis names it.
#
#   tests/browser/run.sh              all scenarios
#   tests/browser/run.sh 1 3 5        only these scenarios (1..6, f1..f3, g1, t1, t2, ff1, ff2, d1, w1, p1, r1)
#
# The long watches (g1: 130 s+ with its own gateway on its defaults; t1: 6 min with its own
# gateway and TURN_CREDENTIAL_TTL=30) run in the background, each in its own firewalled
# namespace with its own gateway, while the others run one after another; all are waited for.
#   KEEP=1 tests/browser/run.sh       keep the temp dir (logs) after the run
#
# Needs root (network namespaces, nft, port 443), ip, nft, chromium, certutil, openssl, node
# with playwright-core installed here (npm install), turnserver, python3 (aiortc venv). The
# gateway listens only on the veth's host address; traffic never leaves the machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

say() { printf '\033[1m[browser]\033[0m %s\n' "$*"; }
die() { printf '[browser] ERROR: %s\n' "$*" >&2; exit 2; }

# --- preconditions -----------------------------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
  die "these tests need root: they create network namespaces, veth pairs and nft rules and bind port 443 (run as root, e.g. in CI or with sudo)"
fi
for tool in ip nft chromium firefox-esr certutil openssl node turnserver python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (tests/run installs it: chromium, firefox-esr, libnss3-tools, nftables, iproute2, coturn, nodejs, openssl, curl)"
done
[[ -x /usr/bin/chromium ]] || die "Debian chromium must be at /usr/bin/chromium"
[[ -d "$here/node_modules/playwright-core" ]] || die "playwright-core is missing: (cd tests/browser && npm install)"
[[ -d "$here/node_modules/puppeteer-core" ]] || die "puppeteer-core is missing: (cd tests/browser && npm install)"
ip netns list >/dev/null 2>&1 || die "network namespaces are not available here (ip netns list failed)"

venv="$root/tests/.venv-aiortc"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import aiortc' >/dev/null 2>&1; then
  say "creating the aiortc virtualenv ($venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check aiortc
fi

gw_bin=${GATEWAY_BIN:-$root/target/release/gateway}
if [[ ! -x "$gw_bin" ]]; then
  say "building the gateway (cargo build --release -p gateway --features vp8)"
  cargo build --release -p gateway --features vp8 --quiet
fi

selected=("$@")
want() { # x* scenarios (diagnostic extras) run only when named
  ((${#selected[@]} == 0)) && [[ $1 != x* ]] && return 0
  local s
  for s in "${selected[@]}"; do [[ "$s" == "$1" ]] && return 0; done
  return 1
}
want_any() { local s; for s in "$@"; do want "$s" && return 0; done; return 1; }

# --- names, addresses, temp dir, cleanup -----------------------------------------------------
id=$$
octet=$((id % 200 + 20)) # 10.213.<octet>.0/29, different per run
for _ in $(seq 1 200); do
  ip -4 addr show | grep -q "10\.213\.$octet\." || break
  octet=$(((octet - 19) % 200 + 20))
done
host_ip=10.213.$octet.1 # host side of the firewalled pair (the gateway listens here)
ns_ip=10.213.$octet.2
host_ip2=10.213.$octet.5 # host side of the control pair (no firewall)
ns_ip2=10.213.$octet.6
host_ip3=10.213.$octet.9 # g1's own gateway (defaults) and firewalled namespace
ns_ip3=10.213.$octet.10
host_ip4=10.213.$octet.13 # t1's own gateway (TURN_CREDENTIAL_TTL=30) and firewalled namespace
ns_ip4=10.213.$octet.14
ns=gwfw$id
ns2=gwopen$id
ns3=gwlong$id
ns4=gwttl$id
veth_h=gwh$id veth_n=gwn$id
veth_h2=goh$id veth_n2=gon$id
veth_h3=glh$id veth_n3=gln$id
veth_h4=gth$id veth_n4=gtn$id
nft_table=gwfw$id
host_name=gateway.test
work=$(mktemp -d /tmp/gateway-browser.XXXXXX)
out_dir="$root/target/browser"
mkdir -p "$out_dir"
pids=()

cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in "$ns" "$ns2" "$ns3" "$ns4"; do ip netns del "$n" 2>/dev/null; done
  for v in "$veth_h" "$veth_h2" "$veth_h3" "$veth_h4"; do ip link del "$v" 2>/dev/null; done
  rm -rf "/etc/netns/$ns" "/etc/netns/$ns2" "/etc/netns/$ns3" "/etc/netns/$ns4"
  if [[ -n "${KEEP:-}" ]]; then echo "[browser] kept $work"; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Namespaces left by an earlier run that was killed (its PID is gone).
for old in $(ip netns list | grep -Eo '^gw(fw|open|long|ttl)[0-9]+' || true); do
  kill -0 "${old##*[a-z]}" 2>/dev/null && continue
  say "removing namespace $old left by a killed run"
  ip netns del "$old" 2>/dev/null || true
  rm -rf "/etc/netns/$old"
done

# --- network: two namespaces, one behind a UDP-dropping firewall -------------------------------
make_ns() { # ns veth_host veth_ns host_ip ns_ip gateway_ip
  ip netns add "$1"
  ip link add "$2" type veth peer name "$3"
  ip link set "$3" netns "$1"
  ip addr add "$4/30" dev "$2"
  ip link set "$2" up
  ip netns exec "$1" ip addr add "$5/30" dev "$3"
  ip netns exec "$1" ip link set "$3" up
  ip netns exec "$1" ip link set lo up
  # A default route (Chromium picks host candidates from the default-route interface), and
  # a containment rule: nothing but the gateway's address may be reached (no packet of the
  # tests can leave the machine, even where the host forwards).
  ip netns exec "$1" ip route add default via "$4"
  ip netns exec "$1" nft -f - <<EOF
table netdev ${nft_table}c {
  chain egress {
    type filter hook egress device "$3" priority -10;
    ip daddr != $6 drop
    meta protocol ip6 drop
  }
}
EOF
  # `ip netns exec` bind-mounts /etc/netns/NS/{hosts,resolv.conf} over /etc: the test host name
  # resolves from the hosts file, and DNS goes to the namespace's own loopback (nothing
  # listens: queries fail at once instead of leaving the machine or timing out).
  mkdir -p "/etc/netns/$1"
  printf '127.0.0.1 localhost\n%s %s\n' "$6" "$host_name" >"/etc/netns/$1/hosts"
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"/etc/netns/$1/resolv.conf"
}
# The firewall: silently drop every UDP packet leaving the namespace (netdev egress on its veth).
firewall() { # ns veth_ns
  ip netns exec "$1" nft -f - <<EOF
table netdev $nft_table {
  chain egress {
    type filter hook egress device "$2" priority 0;
    meta l4proto udp counter drop
  }
}
EOF
}
dns_ns=("$ns" "$ns2")
dns_ip=("$host_ip" "$host_ip")
make_ns "$ns" "$veth_h" "$veth_n" "$host_ip" "$ns_ip" "$host_ip"
make_ns "$ns2" "$veth_h2" "$veth_n2" "$host_ip2" "$ns_ip2" "$host_ip"
firewall "$ns" "$veth_n"
if want g1; then
  make_ns "$ns3" "$veth_h3" "$veth_n3" "$host_ip3" "$ns_ip3" "$host_ip3"
  firewall "$ns3" "$veth_n3"
  dns_ns+=("$ns3") dns_ip+=("$host_ip3")
fi
if want t1; then
  make_ns "$ns4" "$veth_h4" "$veth_n4" "$host_ip4" "$ns_ip4" "$host_ip4"
  firewall "$ns4" "$veth_n4"
  dns_ns+=("$ns4") dns_ip+=("$host_ip4")
fi
# A DNS server on each namespace's loopback that knows the test host name (its gateway).
for i in "${!dns_ns[@]}"; do
  ip netns exec "${dns_ns[$i]}" python3 "$here/fake_dns.py" "$host_name" "${dns_ip[$i]}" 2>>"$work/dns-${dns_ns[$i]}.log" &
  pids+=("$!")
done
for n in "${dns_ns[@]}"; do
  for _ in $(seq 1 50); do
    ip netns exec "$n" getent ahostsv4 "$host_name" >/dev/null 2>&1 && ip netns exec "$n" ss -lun | grep -q '127.0.0.1:53 ' && break
    sleep 0.1
  done
done
say "namespaces: $ns ($ns_ip, UDP dropped) and $ns2 ($ns_ip2, open); gateway on $host_ip"

# --- TLS: a test CA, a certificate for gateway.test (and one for another name) ----------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=gateway browser-test CA $id" -keyout "$work/ca.key" -out "$work/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
make_cert() { # name prefix
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$work/$2.key" -out "$work/$2.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$1" >"$work/$2.ext"
  openssl x509 -req -in "$work/$2.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/$2.ext" -out "$work/$2.pem" 2>/dev/null
}
make_cert "$host_name" server
make_cert other.test wrongname
# Chromium trusts the CA through an NSS database in a throw-away HOME.
export HOME="$work/home"
mkdir -p "$HOME/.pki/nssdb"
certutil -d "sql:$HOME/.pki/nssdb" -N --empty-password
certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n gateway-test-ca -i "$work/ca.pem"

turn_secret=$(openssl rand -hex 24)
coturn_secret=$(openssl rand -hex 24)
coturn_port=3479

# --- processes ---------------------------------------------------------------------------------
gw_pid=""
gw_log=""
launched_pid=""
# launch_gateway IP LABEL CERT-PREFIX [extra env...]: a gateway on IP (TURN on :443, HTTP on
# :9100), log in $work/gateway-LABEL.log; waits until /health answers. PID in $launched_pid.
launch_gateway() {
  local ip=$1 label=$2 cert=$3
  shift 3
  local glog="$work/gateway-$label.log"
  env RUST_LOG="${GATEWAY_RUST_LOG:-debug,str0m=info,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info}" \
    TURN_SECRET="$turn_secret" TURN_HOST="$host_name" \
    TURN_LISTEN="$ip:443" GATEWAY_HTTP_ADDR="$ip:9100" \
    WEBRTC_BIND_IP="$ip" WEBRTC_ADVERTISE_IP="$ip" \
    TLS_CERT="$work/$cert.pem" TLS_KEY="$work/$cert.key" "$@" \
    "$gw_bin" >"$glog" 2>&1 &
  launched_pid=$!
  pids+=("$launched_pid")
  for _ in $(seq 1 100); do
    if curl -fsS --max-time 1 "http://$ip:9100/health" >/dev/null 2>&1; then return 0; fi
    kill -0 "$launched_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "--- gateway log ($glog) ---" >&2
  tail -40 "$glog" >&2
  die "the gateway ($label) did not become healthy on http://$ip:9100/health"
}
start_gateway() { # label cert-prefix [extra env...]: the gateway on $host_ip
  local label=$1
  launch_gateway "$host_ip" "$@"
  gw_pid=$launched_pid
  gw_log="$work/gateway-$label.log"
}
stop_gateway() {
  [[ -n "$gw_pid" ]] || return 0
  kill "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  gw_pid=""
}

cot_pid=""
cot_log=""
start_coturn() { # label secret
  cot_log="$work/coturn-$1.log"
  cat >"$work/turnserver-$1.conf" <<EOF
listening-ip=$host_ip
relay-ip=$host_ip
listening-port=$coturn_port
no-udp
no-dtls
no-tls
min-port=49152
max-port=49999
use-auth-secret
static-auth-secret=$2
realm=$host_name
allowed-peer-ip=$host_ip
no-multicast-peers
no-tcp-relay
fingerprint
no-cli
no-software-attribute
no-rfc5780
userdb=$work/turndb-$1
pidfile=$work/turnserver-$1.pid
log-file=$cot_log
simple-log
verbose
EOF
  turnserver -c "$work/turnserver-$1.conf" >"$work/coturn-$1.stdout" 2>&1 &
  cot_pid=$!
  pids+=("$cot_pid")
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/$host_ip/$coturn_port") 2>/dev/null; then return 0; fi
    kill -0 "$cot_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/coturn-$1.stdout" >&2
  die "coturn did not start on $host_ip:$coturn_port"
}
stop_coturn() {
  [[ -n "$cot_pid" ]] || return 0
  kill "$cot_pid" 2>/dev/null || true
  wait "$cot_pid" 2>/dev/null || true
  cot_pid=""
}

# --- scenarios ---------------------------------------------------------------------------------
passed=0
failed=0
summary=()
record() { # name ok detail
  if [[ $2 == 1 ]]; then
    passed=$((passed + 1))
    summary+=("PASS  $1  $3")
  else
    failed=$((failed + 1))
    summary+=("FAIL  $1  $3")
  fi
}

# run_browser NS NAME JSON-FRAGMENT  → output in $work/NAME.out, status in $?
# ($script, $limit, $gw_ip and $gw_log choose the driver, its time limit and the gateway.)
script=scenario.mjs
limit=120
run_browser() {
  local netns=$1 sname=$2 frag=$3
  local json
  json=$(printf '{"name":"%s","hostIp":"%s","hostName":"%s","gatewayLog":"%s","coturnLog":"%s","caFile":"%s","userDataDir":"%s",%s}' \
    "$sname" "${gw_ip:-$host_ip}" "$host_name" "$gw_log" "$cot_log" "$work/ca.pem" "$work/profile-$sname" "$frag")
  if [[ -n "${exec_browser:-}" ]]; then # (background: this subshell becomes `timeout`, killable by PID)
    exec timeout -k 5 "$limit" ip netns exec "$netns" env HOME="$HOME" node "$here/$script" "$json" >"$work/$sname.out" 2>&1
  fi
  timeout -k 5 "$limit" ip netns exec "$netns" env HOME="$HOME" node "$here/$script" "$json" >"$work/$sname.out" 2>&1
}

# Long watches in the background: bg_start NAME NS GATEWAY-IP GATEWAY-LOG SCRIPT LIMIT JSON;
# bg_collect waits for all of them and records each result.
bg_names=()
bg_pids=()
bg_start() {
  local sname=$1 netns=$2
  say "scenario $sname (background)"
  (gw_ip=$3 gw_log=$4 script=$5 limit=$6 exec_browser=1 run_browser "$netns" "$sname" "$7") &
  bg_names+=("$sname")
  bg_pids+=("$!")
  pids+=("$!")
}
bg_collect() {
  local i sname
  for i in "${!bg_names[@]}"; do
    sname=${bg_names[$i]}
    if wait "${bg_pids[$i]}"; then
      say "scenario $sname (background): passed"
      sed 's/^/    /' "$work/$sname.out" | grep -E 'STEP|selected pair|watch|watched|stop\(\) done|ended the session|TIMING|RESULT' || true
      record "$sname" 1 "$(grep -E '^RESULT' "$work/$sname.out" | tail -1 | cut -c1-300)"
    else
      say "scenario $sname (background): FAILED"
      sed 's/^/    /' "$work/$sname.out"
      record "$sname" 0 "$(grep -E '^RESULT' "$work/$sname.out" | tail -1 | cut -c1-400 || echo "no result (killed at its time limit?)")"
    fi
  done
}

# scenario NAME NS JSON: a scenario that must pass
scenario() {
  local sname=$1
  say "scenario $sname"
  if run_browser "$2" "$sname" "$3"; then
    sed 's/^/    /' "$work/$sname.out" | grep -E 'coturn log:|timeline|after [0-9]+ (ms|s) more|selected pair|page #stats|video pixels|screenshot|WHEP|after DELETE|allocations \(|TIMING| STEP [0-9]' || true
    record "$sname" 1 "$(grep -Eo 'ice_connected=[^ ]+ first_frame=[^ ]+' "$work/$sname.out" | tail -1)"
  else
    sed 's/^/    /' "$work/$sname.out"
    record "$sname" 0 "$(grep -E '^RESULT' "$work/$sname.out" | tail -1)"
  fi
}

# expect_failure NAME NS JSON REGEX: breaking a link must fail with a diagnosis matching REGEX
expect_failure() {
  local sname=$1 regex=$4
  say "expected failure $sname"
  if run_browser "$2" "$sname" "$3"; then
    sed 's/^/    /' "$work/$sname.out"
    record "$sname" 0 "passed although the link was broken"
  elif grep -Eq "$regex" "$work/$sname.out"; then
    sed 's/^/    /' "$work/$sname.out" | grep -E '^    (RESULT|HINT|  failure|  TLS|  firewall|  candidate error)' || true
    record "$sname" 1 "failed as expected; diagnosis matches /$regex/"
  else
    sed 's/^/    /' "$work/$sname.out"
    record "$sname" 0 "failed, but the diagnosis does not match /$regex/"
  fi
}

nft_frag="\"nftTable\":\"$nft_table\""

# Background: gateways of their own for the long watches (started first, waited for last).
if want g1; then
  # Every setting the gateway has a default for stays on its default (SESSION_IDLE_TIMEOUT=60,
  # TURN_CREDENTIAL_TTL, ICE server list); the Geti client uses the default ICE policy.
  launch_gateway "$host_ip3" geti server
  bg_start "g1-geti-ui-client" "$ns3" "$host_ip3" "$work/gateway-geti.log" geti.mjs 330 \
    "\"watchMs\":130000,\"checkEveryMs\":5000,\"replayMs\":10000,\"endWaitMs\":90000"
fi
if want t1; then
  launch_gateway "$host_ip4" ttl30 server TURN_CREDENTIAL_TTL=30
  bg_start "t1-ttl-30-six-minutes" "$ns4" "$host_ip4" "$work/gateway-ttl30.log" scenario.mjs 420 \
    "\"url\":\"https://$host_name/?relay=1&transport=tls\",\"expect\":{\"path\":\"relay\",\"protocol\":\"tls\",\"urlPort\":443},\"watchMs\":360000,\"checkEveryMs\":5000,$nft_frag"
fi

# Gateway A: embedded relay (TLS+TCP on 443, UDP TURN on 3478 for the UDP-only variant).
if want_any 1 2 3 x1 5 6 f3 t2 ff1 ff2; then
  # A short idle timeout: a relayed viewer must outlive the (bound) session's idle deadline.
  start_gateway main server TURN_UDP_LISTEN="$host_ip:3478" SESSION_IDLE_TIMEOUT=3
  say "gateway up: $(curl -fsS "http://$host_ip:9100/health")"

  want 1 && scenario "1-turn-tls-443" "$ns" \
    "\"url\":\"https://$host_name/?relay=1&transport=tls\",\"expect\":{\"path\":\"relay\",\"protocol\":\"tls\",\"urlPort\":443},\"screenshot\":\"$out_dir/scenario1.png\",\"pixelCheck\":true,$nft_frag"
  want 2 && scenario "2-turn-tcp-443" "$ns" \
    "\"url\":\"https://$host_name/?relay=1&transport=tcp\",\"expect\":{\"path\":\"relay\",\"protocol\":\"tcp\",\"urlPort\":443},\"holdMs\":6000,$nft_frag"
  want 3 && scenario "3-control-udp-direct" "$ns2" \
    "\"url\":\"https://$host_name/\",\"hostIp\":\"$host_ip\",\"expect\":{\"path\":\"host\",\"protocol\":\"udp\"}"
  want x1 && scenario "x1-relay-tls-without-firewall" "$ns2" \
    "\"url\":\"https://$host_name/?relay=1&transport=tls\",\"expect\":{\"path\":\"relay\",\"protocol\":\"tls\",\"urlPort\":443}"
  want 5 && scenario "5-whep-delete-revokes" "$ns" \
    "\"mode\":\"whep\",\"url\":\"https://$host_name/health\",\"expect\":{\"path\":\"relay\"},$nft_frag"
  if want 6; then
    say "scenario 6-aiortc-turn-tcp"
    if timeout -k 5 90 ip netns exec "$ns" "$venv/bin/python" "$here/aiortc_client.py" --name 6-aiortc-turn-tcp \
      --api "http://$host_name:9100" --gateway-log "$gw_log" --nft-table "$nft_table" >"$work/6.out" 2>&1; then
      sed 's/^/    /' "$work/6.out" | grep -E 'selected|TIMING|frames' || true
      record "6-aiortc-turn-tcp" 1 "$(grep -Eo 'ice_connected=[^ ]+ first_frame=[^ ]+' "$work/6.out" | tail -1)"
    else
      sed 's/^/    /' "$work/6.out"
      record "6-aiortc-turn-tcp" 0 "$(grep -E "^RESULT" "$work/6.out" | tail -1 || echo "the aiortc client crashed (output above)")"
    fi
  fi
  want f3 && expect_failure "f3-udp-only-relay-url" "$ns" \
    "\"url\":\"https://$host_name/?relay=1&transport=udp\",\"timeoutMs\":15000,$nft_frag" \
    'HINT: only UDP ICE servers were given .* dropped by the firewall'
  # Ending a session closes its allocations within 1 s (alone on this gateway: /health
  # allocations counts only its own) and revokes its credential.
  want t2 && scenario "t2-end-closes-allocations" "$ns" \
    "\"mode\":\"whep\",\"url\":\"https://$host_name/health\",\"whepTransport\":\"tls\",\"allocCheck\":true,\"expect\":{\"path\":\"relay\",\"protocol\":\"tls\"},$nft_frag"
  for ff in ff1:tls ff2:tcp; do
    fname=${ff%%:*} proto=${ff#*:}
    want "$fname" || continue
    script=firefox.mjs limit=90 scenario "$fname-firefox-esr-$proto" "$ns" \
      "\"url\":\"https://$host_name/?relay=1&transport=$proto\",\"protocol\":\"$proto\",\"profileDir\":\"$work/ffprofile-$fname\""
  done
  stop_gateway
fi

# Gateway B: the embedded relay switched off (TURN_EMBEDDED=false): coturn is the only relay
# the gateway's own page is given; then coturn with a wrong secret.
if want 4 || want f1; then
  start_gateway coturn server TURN_EMBEDDED=false COTURN_HOST="$host_name" COTURN_PORT="$coturn_port" COTURN_SECRET="$coturn_secret"
  if want 4; then
    start_coturn good "$coturn_secret"
    scenario "4-coturn-fallback" "$ns" \
      "\"url\":\"https://$host_name/?relay=1&transport=tcp\",\"coturnExpected\":true,\"expect\":{\"path\":\"relay\",\"protocol\":\"tcp\",\"urlPort\":$coturn_port},$nft_frag"
    stop_coturn
  fi
  if want f1; then
    start_coturn wrongsecret "not-the-gateways-secret"
    expect_failure "f1-coturn-wrong-secret" "$ns" \
      "\"mode\":\"external\",\"externalPort\":$coturn_port,\"url\":\"https://$host_name/health\",\"timeoutMs\":15000,$nft_frag" \
      'HINT: .*(rejected the credentials \(401|authentication failure).*static-auth-secret'
    stop_coturn
  fi
  stop_gateway
fi

# Gateway C: certificate for another name. The page comes over plain HTTP (port 9100) so that
# only TURNS meets the wrong certificate.
if want f2; then
  start_gateway wrongname wrongname
  expect_failure "f2-turns-cert-wrong-name" "$ns" \
    "\"url\":\"http://$host_name:9100/?relay=1&transport=tls\",\"timeoutMs\":15000,$nft_frag" \
    "HINT: TURNS cannot work: .*(does not match|altnames).*subjectAltName contains $host_name"
  stop_gateway
fi

# Gateway D: the first five minutes. The gateway on its defaults (no secret, no certificate,
# default logging) with only the addresses this machine's namespaces need (its listeners and
# media sockets on $host_ip instead of 0.0.0.0, where the background gateways hold 443 and the
# media ports); the viewer URL is read from its start-up log and opened as a new user would.
if want d1; then
  dlog="$work/gateway-defaults.log"
  env -u RUST_LOG TURN_LISTEN="$host_ip:443" GATEWAY_HTTP_ADDR="$host_ip:9100" WEBRTC_BIND_IP="$host_ip" \
    "$gw_bin" >"$dlog" 2>&1 &
  gw_pid=$!
  pids+=("$gw_pid")
  gw_log=$dlog
  viewer_url=""
  for _ in $(seq 1 150); do # up to 15 s for the start-up log to name the viewer page
    viewer_url=$(sed 's/\x1b\[[0-9;]*m//g' "$dlog" | grep -F 'viewer page' | grep -Eo 'url=http://[^ ]+' | head -1 | cut -d= -f2- || true)
    [[ -n "$viewer_url" ]] && break
    kill -0 "$gw_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ "$viewer_url" != "http://$host_ip:9100/" ]]; then
    sed 's/^/    /' "$dlog"
    record "d1-defaults-viewer-url" 0 "the start-up log names viewer URL '${viewer_url}', expected http://$host_ip:9100/"
  else
    say "the start-up log names the viewer page: $viewer_url"
    scenario "d1-defaults-viewer-url" "$ns2" \
      "\"url\":\"$viewer_url\",\"expect\":{\"path\":\"host\",\"protocol\":\"udp\"},\"pixelCheck\":true"
  fi
  stop_gateway
fi

# Gateway E: a stream published by WHIP. An aiortc publisher on the host side publishes a moving
# H.264 picture to /whip/cam with the bearer token; Chromium in the UDP-blocked namespace plays
# that stream through the embedded relay over TURN/TLS on 443, and the publisher hears the
# viewer's arrival as a keyframe request (PLI).
if want w1; then
  whip_token=$(openssl rand -hex 24)
  start_gateway whip server STREAMS="cam=whip" WHIP_TOKEN="$whip_token"
  "$venv/bin/python" "$root/tests/standins/whip_publisher.py" --url "http://$host_ip:9100/whip/cam" \
    --token "$whip_token" --codec h264 --size 320x240 --host-ip "$host_ip" --lifetime 150 \
    >"$work/w1-publisher.out" 2>&1 &
  pub_pid=$!
  pids+=("$pub_pid")
  for _ in $(seq 1 150); do # up to 15 s for the publisher to connect
    grep -q '^CONNECTED' "$work/w1-publisher.out" && break
    kill -0 "$pub_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^CONNECTED' "$work/w1-publisher.out"; then
    sed 's/^/    /' "$work/w1-publisher.out"
    record "w1-whip-published-turn-tls" 0 "the WHIP publisher did not connect (output above)"
  else
    plis_before=$(grep -c '^PLI' "$work/w1-publisher.out" || true)
    scenario "w1-whip-published-turn-tls" "$ns" \
      "\"url\":\"https://$host_name/?stream=cam&relay=1&transport=tls\",\"expect\":{\"path\":\"relay\",\"protocol\":\"tls\",\"urlPort\":443},\"pixelCheck\":true,\"screenshot\":\"$out_dir/scenario-w1.png\",$nft_frag"
    plis_after=$(grep -c '^PLI' "$work/w1-publisher.out" || true)
    say "keyframe requests at the WHIP publisher: $plis_before before the viewer, $plis_after after"
    if ((plis_after <= plis_before)); then
      record "w1-publisher-pli" 0 "the publisher got no keyframe request when the viewer joined"
    else
      record "w1-publisher-pli" 1 "PLIs at the publisher: $plis_before before the viewer, $plis_after after"
    fi
  fi
  kill "$pub_pid" 2>/dev/null || true
  wait "$pub_pid" 2>/dev/null || true
  stop_gateway
fi

# The Geti stand-in (aiortc, Geti's endpoints) serving the Geti UI's connection logic as its own
# web application at `/`, its pipeline active for one project id. start_standin LABEL [args...]
# [-- env...]: its port in $standin_port, PID in $standin_pid, output in $work/standin-LABEL.out.
standin_pid=""
standin_port=""
project_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
start_standin() {
  local label=$1
  shift
  local args=() envs=()
  while (($#)); do
    if [[ $1 == -- ]]; then shift; envs=("$@"); break; fi
    args+=("$1")
    shift
  done
  env "${envs[@]}" "$venv/bin/python" "$root/tests/standins/geti_backend.py" --ui "$here/geti" \
    --project "$project_id" --lifetime 240 "${args[@]}" >"$work/standin-$label.out" 2>&1 &
  standin_pid=$!
  pids+=("$standin_pid")
  for _ in $(seq 1 150); do # up to 15 s (aiortc imports slowly)
    standin_port=$(grep -Eo '^LISTENING [0-9]+' "$work/standin-$label.out" | cut -d' ' -f2 || true)
    [[ -n "$standin_port" ]] && return 0
    kill -0 "$standin_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/standin-$label.out" >&2
  die "the Geti stand-in ($label) did not start"
}
stop_standin() {
  [[ -n "$standin_pid" ]] || return 0
  kill "$standin_pid" 2>/dev/null || true
  wait "$standin_pid" 2>/dev/null || true
  standin_pid=""
}

# Gateway F: Geti behind one port. The stand-in listens on loopback only; the gateway in proxy
# mode (UPSTREAM_URL) fronts it on 443. Chromium in the UDP-blocked namespace opens
# https://gateway.test/ (the stand-in's page, through the gateway): API, upload, WebSocket and
# SSE through the gateway, two viewers through the embedded relay from one pull, a wrong
# project id refused by the stand-in itself.
if want p1; then
  start_standin proxy
  start_gateway proxy server UPSTREAM_URL="http://127.0.0.1:$standin_port"
  script=backend.mjs limit=150 scenario "p1-proxy-geti-one-port" "$ns" \
    "\"mode\":\"proxy\",\"url\":\"https://$host_name/?project=$project_id\",\"protocol\":\"tcp,tls\""
  stop_gateway
  stop_standin
fi

# Gateway G: replacing coturn in Geti's own recipe. The gateway in relay-only mode with the
# recipe's static user and the stand-in's (loopback) media addresses allowed; the stand-in
# configured exactly as the recipe configures Geti (COTURN_HOST/PORT=443/USERNAME/PASSWORD),
# its page on its own port on the host side. Chromium in the UDP-blocked namespace plays over
# TURN/TCP on 443; the stand-in's aiortc allocates on the gateway with the same user.
if want r1; then
  start_gateway relayonly server GATEWAY_MODE=relay TURN_STATIC_USERS="user:password" \
    TURN_ALLOWED_PEERS="127.0.0.1/32"
  start_standin relay --host "$host_ip" --port 9200 -- COTURN_HOST="$host_ip" COTURN_PORT=443 \
    COTURN_USERNAME=user COTURN_PASSWORD=password
  script=backend.mjs limit=150 scenario "r1-relay-only-geti-coturn-recipe" "$ns" \
    "\"mode\":\"relay\",\"url\":\"http://$host_ip:9200/?project=$project_id\",\"protocol\":\"tcp\""
  stop_standin
  stop_gateway
fi

bg_collect

# --- summary -----------------------------------------------------------------------------------
drops=$(ip netns exec "$ns" nft list table netdev "$nft_table" | grep -Eo 'packets [0-9]+' | awk '{print $2}')
echo
say "summary (the firewall dropped ${drops:-?} UDP packets leaving $ns)"
for l in "${summary[@]}"; do echo "  $l"; done
echo "$passed passed, $failed failed"
((failed == 0))
