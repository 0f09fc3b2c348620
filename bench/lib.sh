# Shell functions shared by bench/transfer, bench/swarm and bench/run. Source it from a script
# that runs with `set -euo pipefail` and has set BENCH_NAME (for messages) and KEEP (0: delete
# the paths in CLEANUP_PATHS at exit). See bench/README.md.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }

# bench_dirs: sets REPO, exports CARGO_TARGET_DIR (default outside the repository), and sets
# BENCH_DIR (absolute; default a new /tmp/peershare-bench.XXXXXX).
bench_dirs() {
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/peershare-bench-target}"
  if [ -n "${BENCH_DIR:-}" ]; then
    mkdir -p "$BENCH_DIR"
    BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
  else
    BENCH_DIR="$(mktemp -d /tmp/peershare-bench.XXXXXX)"
  fi
}

# check_runs VALUE: exits with status 2 unless VALUE is an integer 1..100.
check_runs() {
  case "$1" in ''|*[!0-9]*) printf '%s: --runs needs a positive integer\n' "$BENCH_NAME" >&2; exit 2 ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le 100 ] || { printf '%s: --runs must be 1..100\n' "$BENCH_NAME" >&2; exit 2; }
}

# ---- cleanup: every background process started is recorded in PIDS ----------------------------
PIDS=()
CLEANUP_PATHS=()
stop_pid() { # pid: TERM, wait up to 10 s, then KILL
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && stop_pid "$pid"
  done
  if [ "${KEEP:-0}" = 0 ] && [ ${#CLEANUP_PATHS[@]} -gt 0 ]; then
    rm -rf "${CLEANUP_PATHS[@]}"
  fi
  exit "$rc"
}
set_traps() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mibs() { awk -v m="$1" -v t="$2" 'BEGIN { printf "%.1f", m / t }'; } # MiB, seconds -> MiB/s
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
json_list() { local IFS=,; printf '[%s]' "$*"; }

# wait_line FILE REGEX TIMEOUT_S PID: polls FILE until a line matches, the process dies, or time runs out.
wait_line() {
  local file="$1" re="$2" timeout="$3" pid="$4" deadline
  deadline=$(($(date +%s) + timeout))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if grep -q -- "$re" "$file" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { grep -q -- "$re" "$file" 2>/dev/null && return 0; return 1; }
    sleep 0.02
  done
  return 1
}

# need_tools: installs nginx-light, curl, b3sum with apt if missing; sets NGINX; needs python3.
need_tools() {
  local need=() sudo=""
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v b3sum >/dev/null 2>&1 || need+=(b3sum)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || sudo="sudo"
    log "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed"
}

# build_peershare: release build into CARGO_TARGET_DIR; sets BIN.
build_peershare() {
  log "building peershare (release) into $CARGO_TARGET_DIR"
  (cd "$REPO" && cargo build --release --locked --quiet)
  BIN="$CARGO_TARGET_DIR/release/peershare"
  [ -x "$BIN" ] || die "no binary at $BIN"
}

# big_file PATH SIZE_MIB: creates PATH with SIZE_MIB MiB of random bytes unless it already has
# that size, reads it into the page cache, and sets ID to its content id (b3sum).
big_file() {
  local path="$1" size_mib="$2"
  if [ ! -f "$path" ] || [ "$(stat -c %s "$path")" != "$((size_mib * 1024 * 1024))" ]; then
    log "creating $path ($size_mib MiB of random bytes)"
    head -c "${size_mib}M" /dev/urandom >"$path.tmp"
    mv "$path.tmp" "$path"
  fi
  cat "$path" >/dev/null # into the page cache
  ID="$(b3sum --no-names "$path")"
  log "content id $ID"
}

# start_nginx ROOT LOGS [tls]: nginx (sendfile on, its own config and temp prefix in
# $BENCH_DIR/nginx) serving ROOT on 127.0.0.1; sets NGX_PID and NGX_PORT.
# With `tls` (config in $BENCH_DIR/nginx-tls): HTTPS only, TLS 1.3 only, with a self-signed
# ECDSA P-256 certificate for IP 127.0.0.1 made here with openssl (NGX_CERT, for curl --cacert),
# and `ssl_conf_command Options KTLS` (kernel TLS, so that sendfile works through TLS) when this
# nginx and OpenSSL accept it (`nginx -t`); NGX_KTLS_OPT says whether the line is in the config.
# Whether the kernel then did the encryption shows in /proc/net/tls_stat (see ktls_tx).
start_nginx() {
  local root="$1" logs="$2" tls="${3:-}" ngx="$BENCH_DIR/nginx" user_line="" ok=0 listen ssl_lines="" url curl_ca=()
  [ -n "$tls" ] && ngx="$BENCH_DIR/nginx-tls"
  mkdir -p "$ngx/tmp"
  NGX_PORT="$(free_port)"
  listen="127.0.0.1:$NGX_PORT"
  url="http://127.0.0.1:$NGX_PORT/"
  [ "$(id -u)" = 0 ] && user_line="user root;"
  if [ -n "$tls" ]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for the TLS reference"
    NGX_CERT="$ngx/cert.pem"
    timeout 60 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
      -keyout "$ngx/key.pem" -out "$NGX_CERT" >"$logs/openssl-req.log" 2>&1 \
      || { cat "$logs/openssl-req.log" >&2; die "openssl could not make the certificate"; }
    listen="$listen ssl"
    url="https://127.0.0.1:$NGX_PORT/"
    curl_ca=(--cacert "$NGX_CERT")
    ssl_lines="ssl_certificate $NGX_CERT;
  ssl_certificate_key $ngx/key.pem;
  ssl_protocols TLSv1.3;"
    NGX_KTLS_OPT=0
  fi
  _nginx_conf() {
    cat >"$ngx/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $ngx/tmp/body;
  proxy_temp_path $ngx/tmp/proxy;
  fastcgi_temp_path $ngx/tmp/fastcgi;
  uwsgi_temp_path $ngx/tmp/uwsgi;
  scgi_temp_path $ngx/tmp/scgi;
  $ssl_lines
  server {
    listen $listen;
    root $root;
  }
}
EOF
  }
  _nginx_conf
  if [ -n "$tls" ]; then
    ssl_lines="$ssl_lines
  ssl_conf_command Options KTLS;"
    _nginx_conf
    if timeout 30 "$NGINX" -t -q -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" >"$logs/nginx-t.out" 2>&1; then
      NGX_KTLS_OPT=1
    else
      log "nginx does not take 'ssl_conf_command Options KTLS' (see $logs/nginx-t.out): without it"
      ssl_lines="${ssl_lines%$'\n'*}"
      _nginx_conf
    fi
  fi
  "$NGINX" -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" >"$logs/nginx${tls:+-tls}.out" 2>&1 &
  NGX_PID=$!
  PIDS+=("$NGX_PID")
  for _ in $(seq 1 100); do
    if curl -s "${curl_ca[@]}" -o /dev/null --max-time 2 "$url"; then ok=1; break; fi
    kill -0 "$NGX_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { cat "$logs/nginx${tls:+-tls}.out" "$ngx/error.log" >&2 2>/dev/null || true; die "nginx did not start"; }
  NGX_VERSION="$("$NGINX" -v 2>&1 | sed 's/.*version: //')"
  log "nginx $NGX_VERSION on $url"
}

# ktls_tx: the kernel's count of TLS transmit sessions set up so far (TlsTxSw + TlsTxDevice in
# /proc/net/tls_stat), or "none" when the kernel has no TLS module loaded (no kTLS at all).
ktls_tx() {
  [ -r /proc/net/tls_stat ] || { echo none; return 0; }
  awk '$1 == "TlsTxSw" || $1 == "TlsTxDevice" { n += $2 } END { print n + 0 }' /proc/net/tls_stat
}

# nginx_runs RUNS URL OUTFILE SIZE: timed `curl -o OUTFILE URL` + sync, RUNS times (OUTFILE
# deleted and sync run, untimed, before each); checks sizes and the last download against ID;
# sets REF_TIMES.
nginx_runs() {
  local runs="$1" url="$2" out="$3" size="$4" i t0 t1
  REF_TIMES=()
  for i in $(seq 1 "$runs"); do
    rm -f "$out"; sync
    t0=$(now)
    curl -s --fail --max-time 600 -o "$out" "$url"
    sync
    t1=$(now)
    [ "$(stat -c %s "$out")" = "$size" ] || die "nginx download has the wrong size"
    REF_TIMES+=("$(elapsed "$t0" "$t1")")
    log "nginx run $i: ${REF_TIMES[-1]} s"
  done
  [ "$(b3sum --no-names "$out")" = "$ID" ] || die "nginx download does not match"
  rm -f "$out"
}

# start_index HOME DB LOGS: `peershare index --listen 127.0.0.1:0 --db DB`; sets INDEX_PID and
# INDEX_ADDR (read from its "listening on" line).
start_index() { start_index_as index "$@"; }

# start_index_as TAG HOME DB LOGS [INDEX-ARGS...]: as start_index, with extra arguments (e.g.
# --lease 3600s) and the logs in LOGS/TAG.out and LOGS/TAG.err.
# (KEEP_DB=1: open the database as it is, instead of starting from an empty one)
start_index_as() {
  local tag="$1" home="$2" db="$3" logs="$4"
  shift 4
  mkdir -p "$home"
  [ "${KEEP_DB:-0}" = 1 ] || rm -f "$db" "$db-wal" "$db-shm"
  PEERSHARE_HOME="$home" "$BIN" index --listen 127.0.0.1:0 --db "$db" "$@" \
    >"$logs/$tag.out" 2>"$logs/$tag.err" &
  INDEX_PID=$!
  PIDS+=("$INDEX_PID")
  wait_line "$logs/$tag.out" "listening on" 300 "$INDEX_PID" || { cat "$logs/$tag.err" >&2; die "index did not start"; }
  INDEX_ADDR="$(sed -n 's/^peershare index listening on \([^ ]*\).*/\1/p' "$logs/$tag.out" | head -n 1)"
  [ -n "$INDEX_ADDR" ] || die "cannot read the index address from $logs/$tag.out"
  log "$tag on $INDEX_ADDR"
}

# install_missing COMMAND=PACKAGE...: installs, with apt (`apt-get update` first, via sudo
# unless root), the Debian packages whose command is found neither on PATH nor in /usr/sbin;
# does nothing when all are there.
install_missing() {
  local need=() sudo="" spec cmd
  for spec in "$@"; do
    cmd="${spec%%=*}"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("${spec#*=}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}
