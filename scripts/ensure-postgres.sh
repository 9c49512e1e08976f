#!/usr/bin/env bash
# ensure-postgres.sh makes sure the PostgreSQL that keyledger's integration tests use is
# accepting connections, so that `make test` works on a fresh machine:
#
#   postgres://postgres@127.0.0.1:5432/test   (user postgres, trust auth, database "test")
#
# - KEYS_TEST_DATABASE_URL set: that server is used as is; this only waits until it answers.
# - Already accepting connections at 127.0.0.1:5432: makes sure database "test" exists.
# - A Debian cluster on port 5432 exists but is down: starts it.
# - No PostgreSQL: installs the distribution's package (apt-get), lets 127.0.0.1 and ::1
#   connect with trust auth, starts it and creates database "test". Needs root (or sudo -n).
#
# Idempotent, silent on success; on failure one line on stderr says what to do, and exit 1.
set -euo pipefail

readonly host=127.0.0.1 port=5432 user=postgres db=test
readonly wait_seconds=60

say() { echo "ensure-postgres: $*" >&2; }
die() {
	say "$*"
	exit 1
}

# need_root makes sure as_root can work: this runs as root, or passwordless sudo is there.
sudo=()
need_root() {
	if [[ $EUID -eq 0 ]]; then
		sudo=()
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo=(sudo -n)
	else
		die "PostgreSQL is not running at $host:$port and setting it up needs root (run this as root, start PostgreSQL yourself, or set KEYS_TEST_DATABASE_URL)"
	fi
}

# as_root runs a command as root; need_root has been called.
as_root() { "${sudo[@]}" "$@"; }

# quietly runs a command with its output kept aside, shown only when it fails.
quietly() {
	local log
	log=$(mktemp)
	if ! "$@" >"$log" 2>&1; then
		say "failed: $*"
		tail -n 20 "$log" >&2
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
}

# tcp_open reports whether something accepts TCP connections at host port, without any
# PostgreSQL client installed.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_ready waits until the server answers, with pg_isready (arguments passed on) when it
# is installed, else with a TCP connect to host port.
wait_ready() {
	local h=$1 p=$2
	shift 2
	local deadline=$((SECONDS + wait_seconds))
	while ((SECONDS < deadline)); do
		if command -v pg_isready >/dev/null; then
			pg_isready -q "$@" && return 0
		else
			tcp_open "$h" "$p" && return 0
		fi
		sleep 0.5
	done
	return 1
}

# external: KEYS_TEST_DATABASE_URL names the server; nothing here is installed or started.
if [[ -n ${KEYS_TEST_DATABASE_URL:-} ]]; then
	url=$KEYS_TEST_DATABASE_URL
	# host and port of postgres://user:password@host:port/db?params, for the TCP fallback.
	hostport=${url#*://}
	hostport=${hostport%%/*}
	hostport=${hostport%%\?*}
	hostport=${hostport##*@}
	url_host=${hostport%:*}
	url_port=${hostport##*:}
	[[ $hostport == *:* && $url_port =~ ^[0-9]+$ ]] || url_port=5432
	[[ $hostport == *:* ]] || url_host=$hostport
	url_host=${url_host#[}
	url_host=${url_host%]}
	wait_ready "${url_host:-localhost}" "$url_port" -d "$url" -t 2 ||
		die "KEYS_TEST_DATABASE_URL's server (${url_host:-localhost}:$url_port) does not accept connections after ${wait_seconds}s"
	exit 0
fi

psql_admin() { psql -X -q -A -t -w -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$user" "$@"; }

# ensure_database creates database "test" when it is missing, over TCP (trust) or, failing
# that, as the postgres OS user.
ensure_database() {
	local out
	if out=$(psql_admin -d "$db" -c 'SELECT 1' 2>&1); then
		return 0
	fi
	if [[ $out != *"database \"$db\" does not exist"* ]]; then
		die "cannot connect to PostgreSQL at $host:$port as $user: ${out//$'\n'/ } (tests need trust auth for $user from $host, or set KEYS_TEST_DATABASE_URL)"
	fi
	if psql_admin -d postgres -c "CREATE DATABASE $db" >/dev/null 2>&1 ||
		{ [[ $EUID -eq 0 ]] && su postgres -s /bin/sh -c "createdb -p $port $db" >/dev/null 2>&1; }; then
		return 0
	fi
	# Another run may have created it meanwhile.
	psql_admin -d "$db" -c 'SELECT 1' >/dev/null 2>&1 || die "cannot create database $db at $host:$port"
}

ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$host" -p "$port" -t 2; }

if ready; then
	ensure_database
	exit 0
fi

if ! command -v pg_isready >/dev/null && tcp_open "$host" "$port"; then
	# A server runs (perhaps in another container) but this machine has no client tools.
	command -v apt-get >/dev/null || die "something listens at $host:$port but psql is not installed; install the PostgreSQL client"
	need_root
	say "installing the PostgreSQL client (apt-get install postgresql-client)..."
	export DEBIAN_FRONTEND=noninteractive
	quietly as_root apt-get update -q || die "apt-get update failed"
	quietly as_root apt-get install -y -q --no-install-recommends postgresql-client || die "apt-get install postgresql-client failed"
	wait_ready "$host" "$port" -h "$host" -p "$port" -t 2 || die "the server at $host:$port does not accept PostgreSQL connections"
	ensure_database
	exit 0
fi

# cluster_on_port prints "version name status" of the Debian cluster configured for $port,
# if any.
cluster_on_port() {
	command -v pg_lsclusters >/dev/null || return 0
	pg_lsclusters -h 2>/dev/null | awk -v port="$port" '$3 == port { print $1, $2, $4; exit }'
}

need_root
installed=false
cluster=$(cluster_on_port)
if [[ -z $cluster ]]; then
	if [[ -n $(ls -A /etc/postgresql 2>/dev/null) ]]; then
		die "the PostgreSQL clusters in /etc/postgresql do not use port $port (see pg_lsclusters); start one on $port or set KEYS_TEST_DATABASE_URL"
	fi
	command -v apt-get >/dev/null ||
		die "PostgreSQL is not installed and there is no apt-get here: install PostgreSQL, or set KEYS_TEST_DATABASE_URL"
	say "installing PostgreSQL (apt-get install postgresql)..."
	export DEBIAN_FRONTEND=noninteractive
	quietly as_root apt-get update -q || die "apt-get update failed"
	quietly as_root apt-get install -y -q --no-install-recommends postgresql || die "apt-get install postgresql failed"
	installed=true
	cluster=$(cluster_on_port)
	if [[ -z $cluster ]]; then
		# The package creates cluster "main" unless createcluster.conf says otherwise.
		version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | sort -V | tail -n 1)
		[[ -n $version ]] || die "PostgreSQL installed but no server version found under /usr/lib/postgresql"
		quietly as_root pg_createcluster -p "$port" "$version" main || die "pg_createcluster $version main failed"
		cluster="$version main down"
	fi
fi
read -r version name status <<<"$cluster"

if $installed; then
	# First rules win: local TCP connections need no password, as tests expect.
	hba=/etc/postgresql/$version/$name/pg_hba.conf
	if ! grep -q '^# keyledger: trust local TCP' "$hba"; then
		as_root sed -i '1i # keyledger: trust local TCP connections for the test suite (scripts/ensure-postgres.sh)\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
		as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload >/dev/null 2>&1 || true
	fi
fi

if [[ $status != online* ]] && ! ready; then
	quietly as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
		die "could not start PostgreSQL cluster $version/$name (see /var/log/postgresql/postgresql-$version-$name.log)"
fi
wait_ready "$host" "$port" -h "$host" -p "$port" -t 2 ||
	die "PostgreSQL cluster $version/$name does not accept connections at $host:$port after ${wait_seconds}s"
ensure_database
