#!/usr/bin/env bash
# deploy-check.sh — offline validation of the static deployment files under deploy/.
#
#   bash tests/deploy-check.sh          (from anywhere; works on the repository it lives in)
#
# Checks, each reported as PASS/FAIL, exit status non-zero if any fails:
#   systemd  deploy/gateway.service: `systemd-analyze verify` (any diagnostic is a failure:
#            systemd only warns about unknown keys and bad values), required hardening
#            directives present, `systemd-analyze security --offline` exposure <= 2.0;
#            deploy/gateway.env.example documents every setting.
#   k8s      deploy/k8s/*.yaml and deploy/k8s/cluster/*.yaml against the Kubernetes OpenAPI JSON
#            schemas shipped in the PyPI package kubernetes-validate (--strict: unknown fields
#            fail), plus project rules (probes, securityContext, secretKeyRef, UDP ports =
#            50000-50050; cluster mode: the edge DaemonSet's CLUSTER_* settings from the downward
#            API and hostNetwork, a non-root Valkey/Redis StatefulSet with ping probes, a PVC
#            template and in-cluster Services only).
#   compose  deploy/compose.yaml, compose.proxy.yaml, compose.relay.yaml and compose.cluster.yaml
#            against the compose-spec JSON schema shipped in the PyPI package check-jsonschema
#            (builtin vendor.compose-spec), plus project rules (proxy mode: only 443/tcp
#            published, nothing of the backend; cluster mode: 3 gateway nodes with distinct
#            CLUSTER_NODE_ID, their own 1:1 published ports and one shared TURN_SECRET, one
#            unpublished Redis they wait for).
#   docker   deploy/Dockerfile parsed: known instructions only, multi-stage, cargo build
#            --locked, non-root USER, HEALTHCHECK on /health, EXPOSE, setcap; .dockerignore.
#   coturn   deploy/coturn/turnserver.conf: every option known to `turnserver -h` (Debian
#            package coturn), shared-secret auth, private ranges denied.
#
#   justfile every recipe of the justfile under `just --dry-run` (real just), with the variables
#            of the original guide (webrtc-advertise-ip, enable-stun, enable-coturn, coturn-port).
#
# Needs: systemd-analyze (Debian `systemd`), turnserver (Debian `coturn`), Python 3 with venv,
# just (`cargo install just --locked`; tests/run installs it).
# Missing Debian packages are installed with apt-get when running as root. The Python tools go
# into a virtualenv at tests/.venv (gitignored), created on first use from PyPI, pinned below.
# No network use beyond those package installs; nothing is started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEPLOY="$ROOT/deploy"
VENV="$ROOT/tests/.venv"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
# run NAME CMD...: run a check, show its output only on failure.
run() {
    local name="$1"; shift
    if "$@" >"$WORK/out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/      /' "$WORK/out"
    fi
}

apt_install() { # apt_install PACKAGE...: install missing Debian packages (root only)
    if [ "$(id -u)" -ne 0 ]; then
        echo "deploy-check: need Debian package(s) $*; install them (not root, not installing)" >&2
        return 1
    fi
    echo "deploy-check: installing Debian package(s): $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1; then
        apt-get update -qq >"$WORK/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
            >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; return 1; }
    fi
}

# --- tools --------------------------------------------------------------------------------------
command -v systemd-analyze >/dev/null || apt_install systemd
command -v turnserver >/dev/null || apt_install coturn

if ! "$VENV/bin/python" -c 'import kubernetes_validate, check_jsonschema, yaml' 2>/dev/null; then
    echo "deploy-check: creating $VENV (${PY_PACKAGES[*]})"
    rm -rf "$VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
PY="$VENV/bin/python"

echo "== systemd: deploy/gateway.service"
# systemd-analyze verify also checks that ExecStart's binary exists, which it does not on a
# build machine. Verify a byte-for-byte copy whose only change is that one ExecStart line
# pointing at /bin/true, so every other directive of the real file is checked. The copy keeps
# the name gateway.service (verify derives the unit type and name from it).
unit_copy="$WORK/systemd/gateway.service"
mkdir -p "$WORK/systemd"
sed 's|^ExecStart=/usr/local/bin/gateway$|ExecStart=/bin/true|' "$DEPLOY/gateway.service" >"$unit_copy"
if [ "$(diff "$DEPLOY/gateway.service" "$unit_copy" | grep -c '^>')" -ne 1 ]; then
    fail "systemd: exactly one 'ExecStart=/usr/local/bin/gateway' line"
else
    pass "systemd: exactly one 'ExecStart=/usr/local/bin/gateway' line"
fi
verify_unit() {
    # verify exits 0 on unknown keys and unparsable values (it only logs "..., ignoring"), so
    # treat any output at all as a failure.
    local out rc=0
    out="$(systemd-analyze verify --man=no "$unit_copy" 2>&1)" || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && [ -z "$out" ]
}
run "systemd: systemd-analyze verify (no diagnostics)" verify_unit
run "systemd: required directives" "$PY" - "$DEPLOY/gateway.service" <<'EOF'
import sys, re
want = {
    "Service": {
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "SystemCallFilter": "@system-service",
        "EnvironmentFile": "-/etc/gateway/gateway.env", "ExecStart": "/usr/local/bin/gateway",
        "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure", "KillSignal": "SIGTERM",
        "TimeoutStopSec": None, "RestrictAddressFamilies": None,
    },
    "Install": {"WantedBy": "multi-user.target"},
}
sections, cur = {}, None
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line[0] in "#;":
        continue
    m = re.fullmatch(r"\[(\w+)\]", line)
    if m:
        cur = sections.setdefault(m.group(1), {})
        continue
    k, _, v = line.partition("=")
    cur.setdefault(k.strip(), []).append(v.strip())
bad = []
for sec, keys in want.items():
    for k, v in keys.items():
        vals = sections.get(sec, {}).get(k)
        if not vals:
            bad.append(f"[{sec}] {k}= missing")
        elif v is not None and v not in vals:
            bad.append(f"[{sec}] {k}= is {vals}, want {v!r}")
svc = sections.get("Service", {})
if not (svc.get("DynamicUser") == ["yes"] or svc.get("User")):
    bad.append("[Service] neither DynamicUser=yes nor User=")
fams = " ".join(svc.get("RestrictAddressFamilies", [])).split()
for fam in ("AF_INET", "AF_INET6", "AF_UNIX"):
    if fam not in fams:
        bad.append(f"RestrictAddressFamilies lacks {fam}")
if set(fams) - {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}:
    bad.append(f"RestrictAddressFamilies allows more than needed: {fams}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
security_unit() {
    # Exposure is 0.0 (locked down) .. 10.0; --threshold takes tenths. Show only the weak spots.
    local out rc=0
    out="$(systemd-analyze security --offline=true --threshold=20 --no-pager "$unit_copy" 2>&1)" || rc=$?
    printf '%s\n' "$out" | grep -v '✓' || true
    return "$rc"
}
run "systemd: systemd-analyze security --offline exposure <= 2.0" security_unit

run "systemd: gateway.env.example documents every setting" "$PY" - "$DEPLOY/gateway.env.example" <<'EOF'
import sys, re
settings = """GATEWAY_CONFIG GATEWAY_MODE TURN_STATIC_USERS UPSTREAM_URL GATEWAY_HTTP_ADDR TURN_LISTEN TURN_UDP_LISTEN TURN_SECRET TURN_REALM TURN_HOST
TURN_CREDENTIAL_TTL TURN_ALLOWED_PEERS TURN_DENIED_PEERS TLS_CERT TLS_KEY MEDIA_SOURCE
WEBRTC_ADVERTISE_IP WEBRTC_PORT_RANGE ICE_SERVERS STUN_SERVER COTURN_HOST COTURN_PORT
COTURN_USERNAME COTURN_PASSWORD COTURN_SECRET MAX_VIEWERS SESSION_IDLE_TIMEOUT
SESSION_PENDING_MAX SESSION_PENDING_PER_SOURCE TURN_UNBOUND_ALLOCATION_LIFETIME
CORS_ORIGINS CLUSTER_REDIS_URL CLUSTER_NODE_ID CLUSTER_PEER_URL CLUSTER_TOKEN""".split()
text = open(sys.argv[1]).read()
keys = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.M))
bad = [f"{k} not documented" for k in settings if k not in keys]
bad += [f"{k}: not a known setting" for k in sorted(keys - set(settings) - {"LOG_FORMAT", "RUST_LOG"})]
active = re.findall(r"^(TURN_SECRET|COTURN_SECRET|CLUSTER_TOKEN)=(.*)$", text, re.M)
bad += [f"{k} is set to a placeholder in the example" for k, v in active if v.strip()]
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

echo "== k8s: deploy/k8s, deploy/k8s/cluster (Kubernetes $K8S_VERSION schemas, strict)"
# Every manifest file of both kustomize directories, one by one (no kustomize needed): the
# default set in deploy/k8s and the cluster-mode set in deploy/k8s/cluster.
for f in "$DEPLOY"/k8s/*.yaml "$DEPLOY"/k8s/cluster/*.yaml; do
    case "$(basename "$f")" in kustomization.yaml) continue ;; esac
    run "k8s: schema ${f#"$DEPLOY/k8s/"}" \
        "$VENV/bin/kubernetes-validate" --strict --no-warn --quiet -k "$K8S_VERSION" "$f"
done
# k8s_rules DIR SET: the project rules of one kustomize directory; SET is default (deploy/k8s)
# or cluster (deploy/k8s/cluster). Shared: a comment at the top of every file, no namespace,
# the kustomization's resources exist, the gateway pod's least privilege, probes and secret.
k8s_rules() {
    "$PY" - "$@" <<'EOF'
import sys, os, glob, re, yaml
d, which = sys.argv[1], sys.argv[2]
bad = []
docs = {}
for f in sorted(glob.glob(os.path.join(d, "*.yaml"))):
    text = open(f).read()
    if not text.lstrip().startswith("#"):
        bad.append(f"{os.path.basename(f)}: no explanatory comment at the top")
    for doc in yaml.safe_load_all(text):
        if doc:
            docs[(doc["kind"], doc["metadata"]["name"] if "metadata" in doc else os.path.basename(f))] = (f, doc)
            if "namespace" in doc.get("metadata", {}):
                bad.append(f"{os.path.basename(f)}: sets a namespace (manifests are namespace-agnostic)")

kust = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
for r in kust["resources"]:
    if not os.path.exists(os.path.join(d, r)):
        bad.append(f"kustomization.yaml: missing resource {r}")
if which == "cluster":
    # Everything here belongs to the one set: a manifest left out of `resources` is a mistake.
    for f in sorted(glob.glob(os.path.join(d, "*.yaml"))):
        b = os.path.basename(f)
        if b != "kustomization.yaml" and b not in kust["resources"]:
            bad.append(f"kustomization.yaml: {b} is not in resources")

def check_pod(name, spec, host_network):
    if spec.get("hostNetwork", False) != host_network:
        bad.append(f"{name}: hostNetwork should be {host_network}")
    psc = spec.get("securityContext", {})
    c = spec["containers"][0]
    sc = c.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
        bad.append(f"{name}: runAsNonRoot not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        bad.append(f"{name}: readOnlyRootFilesystem not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append(f"{name}: allowPrivilegeEscalation not false")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"] or caps.get("add") != ["NET_BIND_SERVICE"]:
        bad.append(f"{name}: capabilities must drop ALL and add only NET_BIND_SERVICE")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe"):
        g = c.get(probe, {}).get("httpGet", {})
        port = ports.get(g.get("port"), g.get("port"))
        if g.get("path") != "/health" or port != 9100:
            bad.append(f"{name}: {probe} must be httpGet /health on 9100")
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get("TURN_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if ref.get("name") != "gateway-turn" or ref.get("key") != "turn-secret":
        bad.append(f"{name}: TURN_SECRET must come from secretKeyRef gateway-turn/turn-secret")
    if env.get("WEBRTC_PORT_RANGE", {}).get("value", "50000-50050") != "50000-50050":
        bad.append(f"{name}: WEBRTC_PORT_RANGE differs from the media Service")

def cluster_rules():
    kust_text = open(os.path.join(d, "kustomization.yaml")).read()
    if "external" not in kust_text.lower() or "CLUSTER_REDIS_URL" not in kust_text:
        bad.append("kustomization.yaml: no comment on using an external Redis (CLUSTER_REDIS_URL)")
    if ("DaemonSet", "gateway-cluster") not in docs:
        bad.append("no DaemonSet gateway-cluster")
        return
    f, ds = docs[("DaemonSet", "gateway-cluster")]
    name = os.path.basename(f)
    spec = ds["spec"]["template"]["spec"]
    check_pod(name, spec, True)
    if spec.get("nodeSelector", {}).get("gateway.example.com/edge") != "true":
        bad.append(f'{name}: nodeSelector must be gateway.example.com/edge: "true"')
    if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
        bad.append(f"{name}: dnsPolicy must be ClusterFirstWithHostNet (hostNetwork pods "
                   "resolve Service names only with it)")
    envl = spec["containers"][0].get("env", [])
    env = {e["name"]: e for e in envl}
    seen = set()
    for e in envl:  # $(VAR) only expands to variables defined earlier in the list
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
            if ref not in seen:
                bad.append(f"{name}: {e['name']} refers to $({ref}) before it is defined")
        seen.add(e["name"])
    def field(n):
        return env.get(n, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    def value(n):
        return str(env.get(n, {}).get("value", ""))
    host_ip = {n for n in env if field(n) == "status.hostIP"}
    node_name = {n for n in env if field(n) == "spec.nodeName"}
    if field("CLUSTER_NODE_ID") != "spec.nodeName":
        bad.append(f"{name}: CLUSTER_NODE_ID must come from fieldRef spec.nodeName")
    url = value("CLUSTER_REDIS_URL")
    m = re.fullmatch(r"rediss?://(?:[^@/]*@)?([^:/@]+)(?::(\d+))?(?:/(\d+))?", url)
    if "secretKeyRef" in env.get("CLUSTER_REDIS_URL", {}).get("valueFrom", {}):
        pass  # a URL with a password, from a Secret (checked with the other secretKeyRefs)
    elif not m:
        bad.append(f"{name}: CLUSTER_REDIS_URL {url!r} is not redis://HOST:PORT[/DB]")
    elif "." not in m.group(1):  # a Service of this set
        host, port = m.group(1), int(m.group(2) or 6379)
        svc = docs.get(("Service", host))
        if not svc:
            bad.append(f"{name}: CLUSTER_REDIS_URL names Service {host}, not defined here")
        elif port not in [p["port"] for p in svc[1]["spec"]["ports"]]:
            bad.append(f"{name}: Service {host} has no port {port}")
    http_port = int((value("GATEWAY_HTTP_ADDR") or "0.0.0.0:9100").rpartition(":")[2])
    m = re.fullmatch(r"http://\$\((\w+)\):(\d+)", value("CLUSTER_PEER_URL"))
    if not m or m.group(1) not in host_ip or int(m.group(2)) != http_port:
        bad.append(f"{name}: CLUSTER_PEER_URL must be http://$(<status.hostIP>):{http_port}")
    m = re.fullmatch(r"\$\((\w+)\)", value("WEBRTC_ADVERTISE_IP"))
    if not m or m.group(1) not in host_ip:
        bad.append(f"{name}: WEBRTC_ADVERTISE_IP must be $(<status.hostIP>)")
    if not any(f"$({v})" in value("TURN_HOST") for v in node_name):
        bad.append(f"{name}: TURN_HOST must be a per-node name built from spec.nodeName")
    if "whip" in value("STREAMS") and "WHIP_TOKEN" not in env:
        bad.append(f"{name}: STREAMS has a whip stream but WHIP_TOKEN is not set")
    secrets = {n: set(doc.get("stringData") or {}) | set(doc.get("data") or {})
               for (kind, n), (_, doc) in docs.items() if kind == "Secret"}
    for e in envl:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        if ref["name"] not in secrets:
            bad.append(f"{name}: {e['name']} names Secret {ref['name']}, not defined here")
        elif ref["key"] not in secrets[ref["name"]] and not ref.get("optional"):
            bad.append(f"{name}: {e['name']}: Secret {ref['name']} has no key {ref['key']}")

    sts = [(f, doc) for (kind, _), (f, doc) in docs.items() if kind == "StatefulSet"]
    if len(sts) != 1:
        bad.append(f"want one Redis StatefulSet, got {len(sts)}")
        return
    f, st = sts[0]
    name = os.path.basename(f)
    if st["spec"].get("replicas") != 1:
        bad.append(f"{name}: replicas must be 1")
    ps = st["spec"]["template"]["spec"]
    c = ps["containers"][0]
    image = c.get("image", "")
    cli = ("valkey-cli" if image.startswith("valkey/valkey:")
           else "redis-cli" if image.startswith("redis:") else None)
    if not cli:
        bad.append(f"{name}: image {image!r} is neither valkey/valkey: nor redis:")
    for probe in ("livenessProbe", "readinessProbe"):
        cmd = " ".join(c.get(probe, {}).get("exec", {}).get("command", []))
        if not cli or f"{cli} ping" not in cmd:
            bad.append(f"{name}: {probe} must exec '{cli} ping'")
    psc, sc = ps.get("securityContext", {}), c.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
        bad.append(f"{name}: runAsNonRoot not set")
    if not (psc.get("runAsUser") or sc.get("runAsUser")):
        bad.append(f"{name}: no non-zero runAsUser (the image's entrypoint would start as root)")
    if sc.get("readOnlyRootFilesystem") is not True:
        bad.append(f"{name}: readOnlyRootFilesystem not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append(f"{name}: allowPrivilegeEscalation not false")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"] or caps.get("add"):
        bad.append(f"{name}: capabilities must drop ALL and add none")
    claims = [v["metadata"]["name"] for v in st["spec"].get("volumeClaimTemplates", [])]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    if not claims:
        bad.append(f"{name}: no volumeClaimTemplates")
    elif not any(mounts.get(v) == "/data" for v in claims):
        bad.append(f"{name}: no volume claim mounted at /data")
    headless = docs.get(("Service", st["spec"].get("serviceName")))
    if not headless or headless[1]["spec"].get("clusterIP") != "None":
        bad.append(f"{name}: serviceName must name a headless Service (clusterIP: None) here")
    labels = st["spec"]["template"]["metadata"]["labels"]
    for (kind, n), (f, doc) in docs.items():
        if kind != "Service":
            continue
        if doc["spec"].get("type", "ClusterIP") != "ClusterIP":
            bad.append(f"Service {n}: type {doc['spec']['type']} exposes Redis outside the cluster")
        if any(labels.get(k) != v for k, v in doc["spec"].get("selector", {}).items()):
            bad.append(f"Service {n}: selector does not match the StatefulSet's pods")

if which == "cluster":
    cluster_rules()
    print("\n".join(bad))
    sys.exit(1 if bad else 0)

f, dep = docs[("Deployment", "gateway")]
check_pod("deployment.yaml", dep["spec"]["template"]["spec"], False)
f, ds = docs[("DaemonSet", "gateway-edge")]
check_pod("daemonset-hostnetwork.yaml", ds["spec"]["template"]["spec"], True)
f, sec = docs[("Secret", "gateway-turn")]
if "turn-secret" not in sec.get("stringData", {}) and "turn-secret" not in sec.get("data", {}):
    bad.append("secret.yaml: no turn-secret key")

f, svc = docs[("Service", "gateway")]
got = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
if got != {(443, "TCP"), (9100, "TCP")}:
    bad.append(f"service.yaml: ports {sorted(got)}, want 443/TCP and 9100/TCP")
f, media = docs[("Service", "gateway-media")]
ports = media["spec"]["ports"]
if [p["port"] for p in ports] != list(range(50000, 50051)):
    bad.append("service-media-udp.yaml: ports are not exactly 50000..50050")
for p in ports:
    if p.get("protocol") != "UDP" or p.get("targetPort") != p["port"]:
        bad.append(f"service-media-udp.yaml: port {p['port']} must be UDP with targetPort == port")
sel = dep["spec"]["template"]["metadata"]["labels"]
for s in (svc, media):
    if any(sel.get(k) != v for k, v in s["spec"]["selector"].items()):
        bad.append(f"Service {s['metadata']['name']}: selector does not match the Deployment")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}
run "k8s: project rules" k8s_rules "$DEPLOY/k8s" default
run "k8s: cluster rules (DaemonSet on edge nodes, Redis StatefulSet)" k8s_rules "$DEPLOY/k8s/cluster" cluster

echo "== compose: deploy/compose.yaml (compose-spec schema)"
run "compose: schema compose.yaml" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$DEPLOY/compose.yaml"
run "compose: project rules" "$PY" - "$DEPLOY/compose.yaml" "$DEPLOY" <<'EOF'
import sys, os, yaml
c = yaml.safe_load(open(sys.argv[1]))
bad = []
g = c["services"]["gateway"]
build = g.get("build", {})
if build.get("context") != ".." or build.get("dockerfile") != "deploy/Dockerfile":
    bad.append("gateway: build must be context .. with dockerfile deploy/Dockerfile")
for p in ("443:443/tcp", "9100:9100/tcp", "50000-50050:50000-50050/udp"):
    if p not in g.get("ports", []):
        bad.append(f"gateway: port {p} not published")
if g.get("cap_drop") != ["ALL"] or g.get("cap_add") != ["NET_BIND_SERVICE"]:
    bad.append("gateway: must cap_drop ALL and cap_add only NET_BIND_SERVICE")
if g.get("read_only") is not True:
    bad.append("gateway: read_only must be true")
rng = g.get("sysctls", {}).get("net.ipv4.ip_local_port_range", "")
try:
    lo, hi = map(int, str(rng).split())
    if not (lo <= hi < 50000 or lo > 50050):
        bad.append(f"gateway: ip_local_port_range {rng!r} overlaps the media range")
except ValueError:
    bad.append("gateway: sysctl net.ipv4.ip_local_port_range missing or malformed")
if "TURN_SECRET" not in g.get("environment", {}):
    bad.append("gateway: TURN_SECRET not in environment")
text = open(sys.argv[1]).read()
for scenario in ("local", "STUN", "fixed public IP or DNS", "restrictive firewall", "external coturn"):
    if scenario.lower() not in text.lower():
        bad.append(f"compose.yaml: no comment block for scenario {scenario!r}")
t = c["services"].get("coturn")
if not t:
    bad.append("no coturn service")
else:
    if t.get("profiles") != ["coturn"]:
        bad.append("coturn: must be under profile 'coturn'")
    vols = [v.split(":")[0] for v in t.get("volumes", [])]
    if "./coturn/turnserver.conf" not in vols:
        bad.append("coturn: does not mount ./coturn/turnserver.conf")
    elif not os.path.exists(os.path.join(sys.argv[2], "coturn/turnserver.conf")):
        bad.append("coturn: deploy/coturn/turnserver.conf missing")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

echo "== compose: deploy/compose.cluster.yaml (compose-spec schema)"
run "compose: schema compose.cluster.yaml" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$DEPLOY/compose.cluster.yaml"
run "compose: cluster rules (3 gateway nodes, one Redis)" "$PY" - "$DEPLOY/compose.cluster.yaml" <<'EOF'
import sys, re, yaml
c = yaml.safe_load(open(sys.argv[1]))  # resolves the file's YAML merge keys (<<: *gateway)
bad = []
services = c["services"]
nodes = {n: s for n, s in services.items()
         if isinstance(s.get("environment"), dict) and "CLUSTER_NODE_ID" in s["environment"]}
redis = [n for n, s in services.items()
         if str(s.get("image", "")).startswith(("redis:", "valkey/valkey:"))]
if len(nodes) != 3:
    bad.append(f"want 3 gateway services with CLUSTER_NODE_ID, got {sorted(nodes)}")
if set(services) - set(nodes) - set(redis):
    bad.append(f"services neither gateway node nor Redis: {sorted(set(services) - set(nodes) - set(redis))}")
if len(redis) != 1:
    bad.append(f"want one redis service (image redis: or valkey/valkey:), got {redis}")
    redis_name = None
else:
    redis_name = redis[0]
    r = services[redis_name]
    cli = "valkey-cli" if r["image"].startswith("valkey/") else "redis-cli"
    if f"{cli} ping" not in " ".join(r.get("healthcheck", {}).get("test", [])):
        bad.append(f"{redis_name}: healthcheck must run '{cli} ping'")
    if r.get("ports"):
        bad.append(f"{redis_name}: publishes ports (it has no password)")
    if r.get("network_mode") == "host":
        bad.append(f"{redis_name}: host networking would expose it")
    if str(r.get("user", "0")).split(":")[0] in ("0", "root", ""):
        bad.append(f"{redis_name}: must run as a non-root user")
    if r.get("read_only") is not True or r.get("cap_drop") != ["ALL"] or r.get("cap_add"):
        bad.append(f"{redis_name}: must be read_only with cap_drop ALL and no cap_add")

def rng(s):  # "50000-50015" or "9100" -> (lo, hi)
    lo, _, hi = str(s).partition("-")
    return int(lo), int(hi or lo)

def ports_of(svc):  # short syntax "HOST:CONTAINER/proto" -> [(host range, container range, proto)]
    out = []
    for p in svc.get("ports", []):
        m = re.fullmatch(r"(?:[\d.]+:)?([\d-]+):([\d-]+)(?:/(tcp|udp))?", str(p))
        if not m:
            bad.append(f"port {p!r}: use the short syntax HOST:CONTAINER/PROTO")
            continue
        out.append((rng(m.group(1)), rng(m.group(2)), m.group(3) or "tcp"))
    return out

def port_of(addr, default):
    return int(str(addr or f"0.0.0.0:{default}").rpartition(":")[2])

ids, secrets, used, media = {}, set(), {}, []
for n, s in sorted(nodes.items()):
    env = s["environment"]
    node_id = str(env["CLUSTER_NODE_ID"])
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node_id):
        bad.append(f"{n}: CLUSTER_NODE_ID {node_id!r} is not 1-64 of A-Z a-z 0-9 - _ .")
    if node_id in ids:
        bad.append(f"{n}: CLUSTER_NODE_ID {node_id!r} is also {ids[node_id]}'s")
    ids[node_id] = n
    url = str(env.get("CLUSTER_REDIS_URL", ""))
    m = re.fullmatch(r"rediss?://([^:/@]+)(?::\d+)?(?:/\d+)?", url)
    if not m or m.group(1) != redis_name:
        bad.append(f"{n}: CLUSTER_REDIS_URL {url!r} must be redis://{redis_name}:PORT[/DB]")
    if (s.get("depends_on") or {}).get(redis_name, {}).get("condition") != "service_healthy":
        bad.append(f"{n}: must depend on {redis_name} with condition service_healthy")
    http = port_of(env.get("GATEWAY_HTTP_ADDR"), 9100)
    turn = port_of(env.get("TURN_LISTEN"), 443)
    if env.get("CLUSTER_PEER_URL") != f"http://{n}:{http}":
        bad.append(f"{n}: CLUSTER_PEER_URL must be http://{n}:{http}, got {env.get('CLUSTER_PEER_URL')!r}")
    secret = str(env.get("TURN_SECRET", ""))
    if ":?" not in secret:
        bad.append(f"{n}: TURN_SECRET must be required (${{TURN_SECRET:?...}}), never defaulted")
    secrets.add(secret)
    if not env.get("TURN_HOST"):
        bad.append(f"{n}: TURN_HOST not set")
    if "whip" in str(env.get("STREAMS", "")) and not env.get("WHIP_TOKEN"):
        bad.append(f"{n}: STREAMS has a whip stream but WHIP_TOKEN is not set")
    if s.get("cap_drop") != ["ALL"] or s.get("cap_add") != ["NET_BIND_SERVICE"]:
        bad.append(f"{n}: must cap_drop ALL and cap_add only NET_BIND_SERVICE")
    if s.get("read_only") is not True:
        bad.append(f"{n}: read_only must be true")
    if "/health" not in " ".join(s.get("healthcheck", {}).get("test", [])):
        bad.append(f"{n}: no healthcheck on /health")
    ps = ports_of(s)
    for hostr, contr, proto in ps:
        clash = sorted({used[(q, proto)] for q in range(hostr[0], hostr[1] + 1) if (q, proto) in used})
        if clash:
            bad.append(f"{n}: host ports {hostr[0]}-{hostr[1]}/{proto} overlap {', '.join(clash)}'s")
        used.update({(q, proto): n for q in range(hostr[0], hostr[1] + 1)})
    lo, hi = rng(str(env.get("WEBRTC_PORT_RANGE", "50000-50050")))
    media.append((lo, hi, n))
    # Port numbers the gateway writes into turn: URLs and ICE candidates: published 1:1.
    if ((lo, hi), (lo, hi), "udp") not in ps:
        bad.append(f"{n}: media range {lo}-{hi}/udp not published 1:1")
    if ((turn, turn), (turn, turn), "tcp") not in ps:
        bad.append(f"{n}: TURN_LISTEN port {turn}/tcp not published 1:1")
    if not any(contr == (http, http) and proto == "tcp" for _, contr, proto in ps):
        bad.append(f"{n}: HTTP port {http}/tcp not published")
    eph = str(s.get("sysctls", {}).get("net.ipv4.ip_local_port_range", ""))
    try:
        elo, ehi = map(int, eph.split())
        if not (ehi < lo or elo > hi):
            bad.append(f"{n}: ip_local_port_range {eph!r} overlaps the media range")
    except ValueError:
        bad.append(f"{n}: sysctl net.ipv4.ip_local_port_range missing or malformed")
if len(secrets) > 1:
    bad.append("TURN_SECRET differs between the nodes; cluster mode needs one shared secret")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

# The two one-port compose files (proxy mode, relay-only mode) share their rules: only the
# gateway's 443/tcp published, its settings present, least privilege; each adds its mode's.
one_port_rules() { # FILE MODE
    "$PY" - "$1" "$2" <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
mode = sys.argv[2]
bad = []
g = c["services"]["gateway"]
if g.get("ports") != ["443:443/tcp"]:
    bad.append(f"gateway: only 443/tcp may be published, got {g.get('ports')}")
env = g.get("environment", {})
required = {
    "proxy": ("TURN_SECRET", "UPSTREAM_URL", "TURN_HOST", "TLS_CERT", "TLS_KEY"),
    "relay": ("TURN_STATIC_USERS", "TURN_ALLOWED_PEERS", "TURN_HOST", "TLS_CERT", "TLS_KEY"),
}[mode]
for k in required:
    if k not in env:
        bad.append(f"gateway: {k} not in environment")
if mode == "proxy":
    if not str(env.get("UPSTREAM_URL", "")).startswith("http://geti:"):
        bad.append("gateway: UPSTREAM_URL must name the geti service")
    if "geti" not in c["services"]:
        bad.append("no geti service")
else:
    if env.get("GATEWAY_MODE") != "relay":
        bad.append("gateway: GATEWAY_MODE must be relay")
    if "?" not in str(env.get("TURN_ALLOWED_PEERS", "")):
        bad.append("gateway: TURN_ALLOWED_PEERS must be required (${VAR:?...}), never defaulted")
if g.get("cap_drop") != ["ALL"] or g.get("cap_add") != ["NET_BIND_SERVICE"]:
    bad.append("gateway: must cap_drop ALL and cap_add only NET_BIND_SERVICE")
if g.get("read_only") is not True:
    bad.append("gateway: read_only must be true")
for name, s in c["services"].items():
    if name != "gateway" and s.get("ports"):
        bad.append(f"{name}: publishes ports; only the gateway's 443/tcp may be")
    if s.get("network_mode") == "host":
        bad.append(f"{name}: host networking would expose its ports")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}
for f in proxy:proxy-mode relay:relay-only; do
    mode=${f%%:*} label=${f#*:}
    echo "== compose: deploy/compose.$mode.yaml (compose-spec schema)"
    run "compose: schema compose.$mode.yaml" \
        "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$DEPLOY/compose.$mode.yaml"
    run "compose: $label rules" one_port_rules "$DEPLOY/compose.$mode.yaml" "$mode"
done

echo "== docker: deploy/Dockerfile, .dockerignore"
run "docker: Dockerfile rules" "$PY" - "$DEPLOY/Dockerfile" <<'EOF'
import sys, re, shlex
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
         "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
         "HEALTHCHECK", "SHELL"}
lines, buf = [], ""
for raw in open(sys.argv[1]):
    s = raw.rstrip("\n")
    if not buf and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if buf and s.lstrip().startswith("#"):
        continue  # comment lines inside a continued instruction are dropped by Docker too
    if s.endswith("\\"):
        buf += s[:-1] + " "
        continue
    lines.append(buf + s)
    buf = ""
if buf:
    lines.append(buf)
bad = []
args = {}
stages = []  # list of (base, [(instr, rest)])
for l in lines:
    instr, _, rest = l.strip().partition(" ")
    instr = instr.upper()
    rest = rest.strip()
    if instr not in KNOWN:
        bad.append(f"unknown instruction {instr!r}")
        continue
    if instr == "ARG" and not stages:
        k, _, v = rest.partition("=")
        args[k] = v
    if instr == "FROM":
        base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
        stages.append((base, []))
    elif stages:
        stages[-1][1].append((instr, rest))
    elif instr != "ARG":
        bad.append(f"{instr} before the first FROM")
if len(stages) < 2:
    bad.append("not multi-stage (need a builder and a runtime stage)")
else:
    builder, final = stages[0], stages[-1]
    if not re.match(r"rust:.*bookworm", builder[0]):
        bad.append(f"builder base {builder[0]!r} is not a rust bookworm image")
    if final[0] != "debian:bookworm-slim":
        bad.append(f"runtime base {final[0]!r} is not debian:bookworm-slim")
    if not any(i == "RUN" and re.search(r"cargo build --release -p gateway --locked", r) for i, r in builder[1]):
        bad.append("builder does not run 'cargo build --release -p gateway --locked'")
    body = final[1]
    users = [r for i, r in body if i == "USER"]
    if not users:
        bad.append("runtime stage has no USER")
    elif users[-1].split(":")[0] in ("root", "0", ""):
        bad.append(f"runtime USER {users[-1]!r} is root")
    hc = [r for i, r in body if i == "HEALTHCHECK"]
    if not hc or hc[-1].upper().startswith("NONE") or "/health" not in hc[-1]:
        bad.append("runtime stage has no HEALTHCHECK on /health")
    exposed = set()
    for i, r in body:
        if i == "EXPOSE":
            exposed |= set(r.split())
    for p in ("443/tcp", "9100/tcp", "50000-50050/udp"):
        if p not in exposed:
            bad.append(f"EXPOSE lacks {p}")
    runs = " ".join(r for i, r in body if i == "RUN")
    if "setcap cap_net_bind_service=+ep /usr/local/bin/gateway" not in runs:
        bad.append("runtime stage does not setcap cap_net_bind_service=+ep on the binary")
    if "ca-certificates" not in runs:
        bad.append("runtime stage does not install ca-certificates")
    if not re.search(r"apt-get install[^;&]*\blibvpx7\b", runs):
        bad.append("runtime stage does not install libvpx7 (the gateway links libvpx)")
    hc_tool = hc[-1].split("CMD", 1)[-1].split()[0] if hc else ""
    if hc_tool == "curl" and not re.search(r"apt-get install[^;&]*\bcurl\b", runs):
        bad.append("HEALTHCHECK uses curl but the runtime stage does not install it")
    ep = [r for i, r in body if i in ("ENTRYPOINT", "CMD")]
    if not ep or "/usr/local/bin/gateway" not in ep[0]:
        bad.append("runtime stage does not run /usr/local/bin/gateway")
    if not any(i == "COPY" and "--from=builder" in r for i, r in body):
        bad.append("runtime stage does not COPY --from=builder")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
run "docker: .dockerignore excludes build output, keeps the workspace" "$PY" - "$ROOT/.dockerignore" <<'EOF'
import sys
pats = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
bad = []
for want in ("target", "node_modules", "fuzz/target"):
    if not any(p.rstrip("/").endswith(want) for p in pats):
        bad.append(f"{want} not excluded")
for keep in ("Cargo.lock", "Cargo.toml", "tests", "auth", "relay", "gateway", "*.toml", "*.rs"):
    if keep in pats or "/" + keep in pats or "*" in pats:
        bad.append(f"{keep} must stay in the build context")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

echo "== coturn: deploy/coturn/turnserver.conf"
run "coturn: options known to turnserver $(turnserver --version 2>/dev/null | head -n1)" \
    "$PY" - "$DEPLOY/coturn/turnserver.conf" <<'EOF'
import sys, re, subprocess
helptext = subprocess.run(["turnserver", "-h"], capture_output=True, text=True)
known = set(re.findall(r"--([a-z0-9][a-z0-9_-]*)", helptext.stdout + helptext.stderr))
if len(known) < 50:
    print(f"could not read turnserver's option list ({len(known)} options)")
    sys.exit(1)
bad = []
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    key = line.split("=", 1)[0].strip()
    if key not in known:
        bad.append(f"line {n}: unknown option {key!r}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
run "coturn: shared secret, peer policy, hardening" "$PY" - "$DEPLOY/coturn/turnserver.conf" <<'EOF'
import sys, ipaddress
opts = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith("#"):
        k, _, v = line.partition("=")
        opts.setdefault(k.strip(), []).append(v.strip())
bad = []
for flag in ("use-auth-secret", "no-multicast-peers", "no-cli", "fingerprint", "stale-nonce",
             "realm", "static-auth-secret", "cert", "pkey", "allowed-peer-ip", "listening-port",
             "tls-listening-port"):
    if flag not in opts:
        bad.append(f"{flag} missing")
for flag in ("allow-loopback-peers", "lt-cred-mech", "user", "no-auth"):
    if flag in opts:
        bad.append(f"{flag} must not be set (REST secret only, loopback denied)")
ranges = []
for r in opts.get("denied-peer-ip", []):
    a, _, b = r.partition("-")
    ranges.append((ipaddress.ip_address(a), ipaddress.ip_address(b or a)))
def denied(net):
    net = ipaddress.ip_network(net)
    return any(type(a) is type(net.network_address) and a <= net.network_address
               and net.broadcast_address <= b for a, b in ranges)
for net in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::1/128",
            "::/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8"):
    if not denied(net):
        bad.append(f"denied-peer-ip does not cover {net}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

echo "== justfile (real just, every recipe under --dry-run)"
# tests/run installs just (`cargo install just --locked`, built from crates.io source) when
# it is missing; run alone, this script asks for it.
if ! command -v just >/dev/null; then
    fail "justfile: just is not installed (cargo install just --locked)"
else
    # The variables default to the environment; check the file, not this shell's settings.
    J=(env -u WEBRTC_ADVERTISE_IP -u STUN_SERVER -u COTURN_HOST -u COTURN_PORT -u TURN_SECRET
       -u COTURN_SECRET just --justfile "$ROOT/justfile" --working-directory "$ROOT")
    run "justfile: just --list parses it ($(just --version))" "${J[@]}" --list
    recipes="$("${J[@]}" --summary 2>"$WORK/summary.err" || true)"
    for want in default run run-image run-coturn test bench doctor; do
        case " $recipes " in
            *" $want "*) pass "justfile: recipe $want exists" ;;
            *) fail "justfile: recipe $want missing (just --summary: $recipes)" ;;
        esac
    done
    for r in $recipes; do
        case $r in
            run-relay) args=(127.0.0.1/32) ;; # its one required argument
            *) args=() ;;
        esac
        run "justfile: just --dry-run $r" "${J[@]}" --dry-run "$r" "${args[@]}"
    done
    # dry_run_has 'WANT...' -- ARGS: a dry run of ARGS prints every WANT.
    dry_run_has() {
        local wants=() out w
        while [ "$1" != "--" ]; do wants+=("$1"); shift; done
        shift
        out="$("${J[@]}" --dry-run "$@" 2>&1)" || { printf '%s\n' "$out"; return 1; }
        for w in "${wants[@]}"; do
            if ! grep -qF -- "$w" <<<"$out"; then
                printf 'missing %q in:\n%s\n' "$w" "$out"
                return 1
            fi
        done
    }
    run "justfile: defaults set none of the guide's variables" dry_run_has \
        'env  ${TURN_SECRET:+COTURN_SECRET=' -- run
    run "justfile: webrtc-advertise-ip" dry_run_has \
        "WEBRTC_ADVERTISE_IP=203.0.113.7 " -- webrtc-advertise-ip=203.0.113.7 run
    run "justfile: enable-stun" dry_run_has \
        "STUN_SERVER=stun.l.google.com:19302 " -- enable-stun=true run
    run "justfile: enable-coturn coturn-port" dry_run_has \
        "COTURN_HOST=127.0.0.1 COTURN_PORT=3479 " -- enable-coturn=true coturn-port=3479 run
    run "justfile: all four variables (doctor)" dry_run_has \
        "WEBRTC_ADVERTISE_IP=203.0.113.7 STUN_SERVER=stun.l.google.com:19302 COTURN_HOST=203.0.113.7 COTURN_PORT=3479 " \
        "gateway doctor" -- \
        webrtc-advertise-ip=203.0.113.7 enable-stun=true enable-coturn=true coturn-port=3479 doctor
    run "justfile: all four variables (run-image)" dry_run_has \
        "env WEBRTC_ADVERTISE_IP=203.0.113.7 STUN_SERVER=stun.l.google.com:19302 COTURN_HOST=203.0.113.7 COTURN_PORT=3479  env" \
        -- webrtc-advertise-ip=203.0.113.7 enable-stun=true enable-coturn=true coturn-port=3479 run-image
    run "justfile: run-proxy names the upstream" dry_run_has \
        "UPSTREAM_URL=http://10.0.0.5:9100 " -- run-proxy http://10.0.0.5:9100
    run "justfile: run-relay is relay-only mode with the static user and the peers" dry_run_has \
        "GATEWAY_MODE=relay TURN_STATIC_USERS=user:password TURN_ALLOWED_PEERS=10.0.0.5:50000-50050 " \
        -- run-relay 10.0.0.5:50000-50050
    run "justfile: recipe arguments pass through" dry_run_has \
        "./target/release/gateway --help" -- run --help
    run "justfile: an unknown variable is refused" bash -c \
        '! "$@" --dry-run no-such-variable=1 run' _ "${J[@]}"
fi

echo
echo "deploy-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
