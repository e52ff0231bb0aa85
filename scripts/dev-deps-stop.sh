#!/usr/bin/env bash
# dev-deps-stop.sh — stops what scripts/dev-deps.sh started for DIR (by the PIDs it recorded);
# the data is kept unless WIPE=1.
# usage: scripts/dev-deps-stop.sh [DIR]     DIR defaults to $DEV_DEPS_DIR, else <repo>/.dev-deps
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=$(realpath -m "${1:-${DEV_DEPS_DIR:-$ROOT/.dev-deps}}")
RUN=$DIR/run DATA=$DIR/data
log() { printf '[dev-deps-stop] %s\n' "$*" >&2; }

# TERM every server first, then wait for all (weed and nats take a few seconds each to shut down)
STOPPING=()
term_pid() {  # term_pid NAME EXPECTED_CMDLINE_SUBSTRING
  local name=$1 want=$2 f=$RUN/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$want"; then
    kill -TERM "$pid" && STOPPING+=("$name:$pid")
  fi
  rm -f "$f"
}
wait_stopped() {
  local e name pid _
  for e in "${STOPPING[@]}"; do
    name=${e%%:*} pid=${e#*:}
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$name (pid $pid) ignored TERM for 10s, sending KILL"; kill -KILL "$pid"; fi
    log "stopped $name (pid $pid)"
  done
}

# shellcheck source=/dev/null
[ -f "$RUN/ports" ] && . "$RUN/ports"
term_pid nats nats-server
term_pid s3 "weed mini"

PGDATA=$DATA/postgres; [ -f "$RUN/pgdata.path" ] && PGDATA=$(cat "$RUN/pgdata.path")
if [ -f "$PGDATA/postmaster.pid" ] && PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1) && [ -n "$PGBIN" ]; then
  pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PGBIN/pg_ctl" "$@"; else "$PGBIN/pg_ctl" "$@"; fi; }
  if pg -D "$PGDATA" status >/dev/null 2>&1; then
    if pg -D "$PGDATA" -m fast -w -t 60 stop >/dev/null; then log "stopped postgres"; else log "ERROR: could not stop postgres ($PGDATA)"; fi
  fi
fi

wait_stopped
# weed puts its gRPC unix sockets in /tmp whatever TMPDIR says; remove ours
for p in ${SW_MASTER_PORT:-19333} ${SW_VOLUME_PORT:-19340} ${SW_FILER_PORT:-19888} ${SW_ADMIN_PORT:-19646} ${S3_PORT:-19000}; do
  rm -f /tmp/seaweedfs-{master,volume,filer,admin,s3}-grpc-$((p + 10000)).sock
done

if [ "${WIPE:-0}" = 1 ]; then
  rm -rf "$DATA"; [ -f "$RUN/pgdata.path" ] && rm -rf "$PGDATA"; rm -f "$RUN/pgdata.path"; log "wiped $DATA"
fi
exit 0
