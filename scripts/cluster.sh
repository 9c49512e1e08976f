#!/usr/bin/env bash
# cluster.sh runs keyledger's production topology on this machine, on loopback, without
# Docker: a 3-node NATS cluster with JetStream (nats-server built from the version go.mod
# pins), PostgreSQL (scripts/ensure-postgres.sh) with a database of its own, and two keysd
# sharing them with --stream-replicas 3 and one secret file.
#
#   scripts/cluster.sh up       build, start (or say it is already running), print the URLs
#   scripts/cluster.sh down     stop the keysd and nats-server processes it started
#   scripts/cluster.sh status   which of them run
#   scripts/cluster.sh clean    down, then delete its directory and drop its database
#
# Everything it starts keeps its pid file, log and data under CLUSTER_DIR (default ./.cluster),
# and $CLUSTER_DIR/env exports the settings keysctl reads (`. .cluster/env` then keysctl ...).
# A second `up` after `down` keeps the stream, the read model and the secret.
#
# Settings (environment):
#   CLUSTER_DIR        where pid files, logs, data and binaries go (default ./.cluster)
#   CLUSTER_PORT_BASE  fixed ports: NATS clients BASE..BASE+2, routes BASE+10..12, NATS
#                      monitoring BASE+20..22, keysd HTTP BASE+30..31. Unset: free ports are
#                      picked at the first `up` and kept in $CLUSTER_DIR/ports.
#   CLUSTER_DATABASE   the PostgreSQL database keysd uses (default keyledger_cluster)
#   KEYS_TEST_DATABASE_URL  the PostgreSQL server, as for `make test` (default
#                      postgres://postgres@127.0.0.1:5432/test); the database above is made there
#   CLUSTER_WAIT       seconds to wait for each part to be ready (default 60)
#
# PostgreSQL is shared with `make test`, so `down` leaves it running; `clean` drops only
# CLUSTER_DATABASE. Port 4222 is never used (a system NATS may hold it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CLUSTER_DIR:-$root/.cluster}
[[ $dir == /* ]] || dir=$PWD/$dir
database=${CLUSTER_DATABASE:-keyledger_cluster}
admin_url=${KEYS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
wait_seconds=${CLUSTER_WAIT:-60}
readonly root dir database admin_url wait_seconds
readonly nodes=(1 2 3) instances=(1 2)

say() { echo "cluster: $*" >&2; }
die() {
	say "$*"
	exit 1
}

[[ $database =~ ^[a-z_][a-z0-9_]*$ ]] || die "CLUSTER_DATABASE $database: want lower-case letters, digits and _"

# --- processes -------------------------------------------------------------------------

# pid_of prints the pid in $dir/NAME.pid when that process still runs one of our binaries.
pid_of() {
	local file=$dir/$1.pid pid
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# A pid can be reused after a reboot: it is ours only if it runs a binary from $dir/bin.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/bin/" || return 1
	echo "$pid"
}

# start NAME BINARY ARGS... runs BINARY in its own session (so that closing the terminal
# does not stop it), output to $dir/NAME.log, pid to $dir/NAME.pid.
start() {
	local name=$1
	shift
	setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
	echo $! >"$dir/$name.pid"
}

# stop NAME sends SIGTERM, waits up to 15 s, then SIGKILL.
stop() {
	local name=$1 pid i
	pid=$(pid_of "$name") || {
		rm -f "$dir/$name.pid"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name (pid $pid) still running after 15s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/$name.pid"
	say "stopped $name (pid $pid)"
}

# --- ports -----------------------------------------------------------------------------

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port sets picked to a loopback port nothing listens on, other than 4222 and those
# picked before (not in a subshell, so that it remembers them). It picks below the kernel's
# ephemeral range (32768 and up on Linux), so that no outgoing connection and no test's
# port-0 listener can take the port between the pick and the server's bind.
taken=" " picked=
free_port() {
	local i
	for ((i = 0; i < 200; i++)); do
		picked=$((20000 + RANDOM % 12000))
		[[ $picked != 4222 && $taken != *" $picked "* ]] || continue
		port_busy "$picked" && continue
		taken+="$picked "
		return 0
	done
	die "no free loopback port found"
}

# load_ports sets nats_port_N, route_port_N, monitor_port_N and http_port_N from
# $dir/ports, or chooses them (CLUSTER_PORT_BASE, or free ones) and writes that file.
load_ports() {
	if [[ -f $dir/ports ]]; then
		# shellcheck source=/dev/null
		. "$dir/ports"
		return 0
	fi
	local n base=${CLUSTER_PORT_BASE:-}
	if [[ -n $base ]]; then
		[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base + 31 < 65536)) ||
			die "CLUSTER_PORT_BASE $base: want a number from 1024 to 65504"
		((base > 4222 || base + 31 < 4222)) || die "CLUSTER_PORT_BASE $base: the ports would include 4222"
	fi
	: >"$dir/ports.tmp"
	for n in "${nodes[@]}"; do
		for kind in nats:0 route:10 monitor:20; do
			if [[ -n $base ]]; then picked=$((base + ${kind#*:} + n - 1)); else free_port; fi
			echo "${kind%%:*}_port_$n=$picked" >>"$dir/ports.tmp"
		done
	done
	for n in "${instances[@]}"; do
		if [[ -n $base ]]; then picked=$((base + 30 + n - 1)); else free_port; fi
		echo "http_port_$n=$picked" >>"$dir/ports.tmp"
	done
	mv "$dir/ports.tmp" "$dir/ports"
	# shellcheck source=/dev/null
	. "$dir/ports"
}

port() { local v=$1_port_$2; echo "${!v}"; }

nats_urls() {
	local n urls=()
	for n in "${nodes[@]}"; do urls+=("nats://127.0.0.1:$(port nats "$n")"); done
	local IFS=,
	echo "${urls[*]}"
}

# database_url is admin_url with its database replaced by $database.
database_url() {
	local base=${admin_url%%\?*} query=
	[[ $admin_url == *\?* ]] && query="?${admin_url#*\?}"
	base=${base%/*}
	echo "$base/$database$query"
}

# --- waiting ---------------------------------------------------------------------------

# wait_http NAME URL waits until URL answers 200, failing early when NAME's process exits.
wait_http() {
	local name=$1 url=$2 deadline=$((SECONDS + wait_seconds))
	while ((SECONDS < deadline)); do
		curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
		if ! pid_of "$name" >/dev/null; then
			tail -n 20 "$dir/$name.log" >&2 || true
			die "$name exited (log: $dir/$name.log)"
		fi
		sleep 0.25
	done
	tail -n 20 "$dir/$name.log" >&2 || true
	die "$name not ready at $url after ${wait_seconds}s (log: $dir/$name.log)"
}

# --- commands --------------------------------------------------------------------------

nats_config() {
	local n=$1 m routes=()
	for m in "${nodes[@]}"; do
		[[ $m == "$n" ]] || routes+=("    nats-route://127.0.0.1:$(port route "$m")")
	done
	cat <<EOF
# Written by scripts/cluster.sh: node $n of the local keyledger NATS cluster (loopback only).
server_name: keyledger-nats-$n
listen: 127.0.0.1:$(port nats "$n")
http: 127.0.0.1:$(port monitor "$n")
jetstream {
  store_dir: "$dir/nats-$n"
  # The default: flushed to disk every 2 minutes; R3 keeps an acknowledged write while a
  # majority of the nodes survives. docs/reliability.md has the table; "always" fsyncs each.
  sync_interval: 2m
}
cluster {
  name: keyledger-local
  listen: 127.0.0.1:$(port route "$n")
  routes: [
$(printf '%s\n' "${routes[@]}")
  ]
}
EOF
}

build() {
	mkdir -p "$dir/bin"
	say "building nats-server (the version go.mod pins), keysd and keysctl into $dir/bin"
	(cd "$root" && go build -o "$dir/bin/nats-server" github.com/nats-io/nats-server/v2 &&
		go build -o "$dir/bin/" ./cmd/keysd ./cmd/keysctl) || die "go build failed"
}

ensure_database() {
	"$root/scripts/ensure-postgres.sh" || die "PostgreSQL is not available (scripts/ensure-postgres.sh)"
	local exists
	exists=$(psql -X -q -A -t -w -d "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = '$database'") ||
		die "cannot query PostgreSQL at $admin_url"
	if [[ $exists != 1 ]]; then
		psql -X -q -w -d "$admin_url" -c "CREATE DATABASE $database" >/dev/null || die "cannot create database $database"
		say "created database $database"
	fi
}

write_env() {
	local n
	{
		echo "# Written by scripts/cluster.sh: \`. $dir/env\` points keysctl at the local cluster."
		echo "export KEYS_NATS_URL=$(nats_urls)"
		echo "export KEYS_SECRET_FILE=$dir/secret"
		echo "export KEYS_DATABASE_URL=$(database_url)"
		for n in "${instances[@]}"; do
			echo "export CLUSTER_KEYSD_${n}_URL=http://127.0.0.1:$(port http "$n")"
		done
	} >"$dir/env"
}

cmd_up() {
	mkdir -p "$dir"
	load_ports
	build
	ensure_database

	local n started=false
	for n in "${nodes[@]}"; do
		pid_of "nats-$n" >/dev/null && continue
		port_busy "$(port nats "$n")" && die "port $(port nats "$n") for nats-$n is taken (remove $dir/ports or set CLUSTER_PORT_BASE)"
		mkdir -p "$dir/nats-$n"
		nats_config "$n" >"$dir/nats-$n.conf"
		start "nats-$n" "$dir/bin/nats-server" -c "$dir/nats-$n.conf"
		started=true
	done
	# /healthz answers 200 once JetStream is up and the node is current with the cluster's
	# meta leader: only then can keysd create its streams with 3 replicas.
	for n in "${nodes[@]}"; do
		wait_http "nats-$n" "http://127.0.0.1:$(port monitor "$n")/healthz"
	done
	$started && say "NATS cluster ready"

	# One at a time: the first creates the streams and the secret file, the second adopts them.
	for n in "${instances[@]}"; do
		pid_of "keysd-$n" >/dev/null && continue
		port_busy "$(port http "$n")" && die "port $(port http "$n") for keysd-$n is taken (remove $dir/ports or set CLUSTER_PORT_BASE)"
		mkdir -p "$dir/keysd-$n"
		start "keysd-$n" "$dir/bin/keysd" \
			--http-addr "127.0.0.1:$(port http "$n")" \
			--nats-url "$(nats_urls)" \
			--database-url "$(database_url)" \
			--secret-file "$dir/secret" \
			--data-dir "$dir/keysd-$n" \
			--stream-replicas 3
		wait_http "keysd-$n" "http://127.0.0.1:$(port http "$n")/readyz"
	done
	write_env

	echo "NATS cluster:   $(nats_urls)"
	for n in "${nodes[@]}"; do
		echo "  nats-$n        monitoring http://127.0.0.1:$(port monitor "$n") (store $dir/nats-$n)"
	done
	echo "PostgreSQL:     $(database_url)"
	for n in "${instances[@]}"; do
		echo "keysd-$n:        http://127.0.0.1:$(port http "$n")/api/v1 (health: /healthz /readyz, metrics: /metrics)"
	done
	echo "secret file:    $dir/secret"
	echo "logs, pids:     $dir/*.log, $dir/*.pid"
	echo "keysctl:        . $dir/env && $dir/bin/keysctl projects create --name my-project"
	echo "stop:           make cluster-down   (make cluster-clean also deletes the data)"
}

cmd_down() {
	[[ -d $dir ]] || return 0
	local n
	# keysd first, so that none of them sees its NATS go away under it.
	for n in "${instances[@]}"; do stop "keysd-$n"; done
	for n in "${nodes[@]}"; do stop "nats-$n"; done
}

cmd_status() {
	local name pid code=0
	for name in nats-1 nats-2 nats-3 keysd-1 keysd-2; do
		if pid=$(pid_of "$name"); then
			echo "$name: running (pid $pid)"
		else
			echo "$name: stopped"
			code=3
		fi
	done
	return $code
}

cmd_clean() {
	cmd_down
	if command -v psql >/dev/null; then
		psql -X -q -w -d "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 &&
			say "dropped database $database" || say "could not drop database $database (PostgreSQL down?)"
	fi
	rm -rf "$dir"
	say "removed $dir"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
clean) cmd_clean ;;
*)
	echo "usage: scripts/cluster.sh up|down|status|clean" >&2
	exit 2
	;;
esac
