#!/usr/bin/env bash
# Regenerates BENCHMARKS.md in one command: references measured now (openssl speed rsa2048, nginx
# with the host's own certificate asking for client certificates), the load tool against a release
# host, and the criterion benches. Loopback only. BENCH_SECONDS (default 10) sets each timed phase.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${BENCH_SECONDS:-10}
export CARGO_TERM_COLOR=never

# The build's packages and what this script needs beyond them, installed only when missing.
./scripts/deps.sh openssl python3 nginx
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

echo "== cargo build --release (the host and the load tool)"
cargo build --release --locked -p wolf-rs -p wolf-client
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=$target_dir/release/wolf-rs
load=$target_dir/release/wolf-load
work=$(mktemp -d -p "$target_dir" bench.XXXXXX)
host_pid=""
cleanup() {
  [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
  [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null && wait "$host_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== openssl speed rsa2048 (1 process, then one per core)"
openssl speed -seconds 3 rsa2048 2>/dev/null | tee "$work/openssl-1.txt" | tail -2
openssl speed -seconds 3 -multi "$(nproc)" rsa2048 2>/dev/null | tee "$work/openssl-n.txt" | tail -2

echo "== wolf-rs host (release)"
http=$(free_port); https=$(free_port); health=$(free_port); ngx=$(free_port)
mkdir -p "$work/wolf" "$work/nginx"
cat > "$work/wolf/config.toml" <<CFG
hostname = "wolf-bench"
bind_address = "127.0.0.1"
[network]
local_ip = "127.0.0.1"
mac = "02:00:00:aa:bb:cc"
[ports]
http = $http
https = $https
rtsp = 0
video = 0
audio = 0
control = 0
[mdns]
enabled = false
[health]
port = $health
[pairing]
pin = ["4321"]
CFG
WOLF_LOG_LEVEL=warn "$bin" --state-dir "$work/wolf" serve > "$work/wolf/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 1 300); do
  "$bin" healthcheck --url "http://127.0.0.1:$health/health" >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin" healthcheck --url "http://127.0.0.1:$health/health" >/dev/null

echo "== nginx $("$nginx_bin" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$ngx with the host's RSA-2048 certificate"
cat > "$work/nginx/nginx.conf" <<CFG
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$ngx ssl;
    ssl_certificate $work/wolf/cert.pem;
    ssl_certificate_key $work/wolf/key.pem;
    ssl_verify_client optional_no_ca;
    # nginx 1.22 leaves TLS 1.3 off by default; the host and Moonlight use it.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    location / { return 200 "ok\n"; }
  }
}
CFG
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf"

lt() { "$load" "$@" --host-bin "$bin" --json --seconds "$secs"; }
wolf_target=(--target "https://127.0.0.1:$https" --http-port "$http" --health-port "$health" --host-pid "$host_pid")
# Alternating rounds, so drift on this shared machine hits both sides alike.
for round in 1 2 3; do
  echo "== round $round: nginx, then wolf-rs handshake storm"
  lt handshake --target "https://127.0.0.1:$ngx" --path / > "$work/nginx-$round.json"
  lt handshake "${wolf_target[@]}" > "$work/wolf-$round.json"
done
echo "== wolf-rs: all scenarios"
lt all "${wolf_target[@]}" > "$work/wolf.json"
# One 1080p60 session of the default Desktop app (its own Xvfb, capture, openbox + xterm) against
# one of the test pattern, alternating, CPU of the host and everything it started.
for round in 1 2; do
  for app in 1 2; do
    echo "== round $round: one 1920x1080x60 stream of app $app"
    lt stream "${wolf_target[@]}" --streams 1 --mode 1920x1080x60 --bitrate-kbps 20000 --app "$app" \
      > "$work/desktop-$app-$round.json"
  done
done
kill "$(cat "$work/nginx/nginx.pid")"
kill "$host_pid" && wait "$host_pid" 2>/dev/null || true
host_pid=""

echo "== cargo bench"
rm -rf "$target_dir/criterion"
cargo bench --locked -p wolf-protocol -p wolf-rs --bench pairing --bench stream --bench store -- \
  --warm-up-time 1 --measurement-time 3 \
  2>&1 | grep -E 'time:' || true

echo "== BENCHMARKS.md"
python3 scripts/bench_report.py --work "$work" --criterion "$target_dir/criterion" --seconds "$secs" \
  --command "scripts/bench.sh" > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
