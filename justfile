# Recipes named as in the original "WebRTC Networking" guide. Variables map to the
# gateway's environment variables; set them on the command line:
#
#   just webrtc-advertise-ip=203.0.113.7 run
#   just enable-stun=true run
#   just enable-coturn=true coturn-port=3478 run
#
# Every recipe passes through whatever TURN_*, TLS_*, WEBRTC_*, ICE_SERVERS, ... is already
# in the environment (see README.md, "Deployment").

set shell := ["bash", "-euo", "pipefail", "-c"]

# IP or DNS name put into host candidates (1:1 NAT, containers): WEBRTC_ADVERTISE_IP.
webrtc-advertise-ip := env_var_or_default("WEBRTC_ADVERTISE_IP", "")
# "true": ask a STUN server for the public address at start-up (STUN_SERVER).
enable-stun := "false"
stun-server := env_var_or_default("STUN_SERVER", "stun.l.google.com:19302")
# "true": list an external coturn (sharing TURN_SECRET) after the embedded relay.
enable-coturn := "false"
coturn-host := env_var_or_default("COTURN_HOST", "")
coturn-port := env_var_or_default("COTURN_PORT", "3478")
image := "gateway:latest"

# The environment the variables above stand for.
_env := (if webrtc-advertise-ip != "" { "WEBRTC_ADVERTISE_IP=" + webrtc-advertise-ip + " " } else { "" }) + (if enable-stun == "true" { "STUN_SERVER=" + stun-server + " " } else { "" }) + (if enable-coturn == "true" { "COTURN_HOST=" + (if coturn-host != "" { coturn-host } else if webrtc-advertise-ip != "" { webrtc-advertise-ip } else { "127.0.0.1" }) + " COTURN_PORT=" + coturn-port + " " } else { "" })

# List the recipes.
default:
    @just --list

# Build and run the gateway (release) with the variables above.
run *ARGS:
    cargo build --release -p gateway
    env {{_env}} ${TURN_SECRET:+COTURN_SECRET=${COTURN_SECRET:-$TURN_SECRET}} ./target/release/gateway {{ARGS}}

# Proxy mode: Geti (or any WebRTC backend) behind one port. The gateway's own HTTP port
# moves off 9100 (the backend's) unless GATEWAY_HTTP_ADDR says otherwise.
run-proxy upstream="http://127.0.0.1:9100" *ARGS:
    cargo build --release -p gateway
    env {{_env}} UPSTREAM_URL={{upstream}} GATEWAY_HTTP_ADDR=${GATEWAY_HTTP_ADDR:-127.0.0.1:8080} ./target/release/gateway {{ARGS}}

# Relay-only mode: the gateway in coturn's place in the original recipe (Geti keeps
# COTURN_HOST/COTURN_PORT=443/COTURN_USERNAME/COTURN_PASSWORD). `peers` must name the backend's
# media address and ports (TURN_ALLOWED_PEERS); `users` is the recipe's static user.
run-relay peers users="user:password" *ARGS:
    cargo build --release -p gateway
    env {{_env}} GATEWAY_MODE=relay TURN_STATIC_USERS={{users}} TURN_ALLOWED_PEERS={{peers}} ./target/release/gateway {{ARGS}}

# Build the container image and run it on the host network.
run-image:
    docker build -f deploy/Dockerfile -t {{image}} .
    docker run --rm --network host --env-file <(env {{_env}} env | grep -E '^(TURN_|TLS_|WEBRTC_|ICE_SERVERS|STUN_SERVER|COTURN_|GATEWAY_|LOG_FORMAT|MEDIA_SOURCE|SHUTDOWN_TIMEOUT|UPSTREAM_URL)') {{image}}

# Start the external coturn fallback (deploy/coturn/turnserver.conf) with docker compose.
run-coturn:
    docker compose -f deploy/compose.yaml --profile coturn up -d coturn

# Every test (installs what the tests need when missing).
test:
    ./tests/run

# Benchmarks: the embedded relay against coturn, same machine, same run.
bench *ARGS:
    cargo run --release -p gateway-bench -- {{ARGS}}

# Check ports, advertised address, certificate, external TURN servers and a relay loop.
doctor:
    cargo build --release -p gateway
    env {{_env}} ${TURN_SECRET:+COTURN_SECRET=${COTURN_SECRET:-$TURN_SECRET}} ./target/release/gateway doctor
