#!/usr/bin/env bash
# The replay figures of docs/performance.md ("## Replay: ..."): on a seeded stream, ROUNDS
# rounds of, side by side, a plain ordered-consumer read of the stream (keysbench
# read-stream, of the key events and of every message), keysctl replay --compare-copy,
# keysctl verify and keysctl events tail to a file, each with its wall time, CPU time and
# peak RSS (/usr/bin/time) and the nats-server's CPU time during it; one line per command,
# tab-separated, with the load average at its start.
#
#   scripts/replay-bench.sh SEED_EVENTS PORT [ROUNDS]
#
# It builds bin/keysctl, bin/keysbench and bin/nats-server (the pinned module), starts a
# nats-server of its own on 127.0.0.1:PORT with its store in $WORK (default
# /tmp/replay-bench-PORT), seeds SEED_EVENTS events there unless the store already holds them
# (keysbench seed), creates the database $DB (default replaybench_PORT) if missing, and stops
# its nats-server at the end (the store is kept for the next run: remove $WORK to seed again).
# Environment: KEYSCTL_BEFORE=path runs that keysctl's replay and tail too, beside this one's
# (before/after, interleaved); NATS_PID=pid uses the nats-server of that pid already serving
# $WORK/js on PORT (seeded: touch $WORK/seeded-SEED_EVENTS) and leaves it running; NICE (default -5 when root, else 0) is the measured commands'
# niceness; TAIL_OUT (default $WORK/tail.out) is where tail writes.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:?usage: $0 SEED_EVENTS PORT [ROUNDS]}
PORT=${2:?usage: $0 SEED_EVENTS PORT [ROUNDS]}
ROUNDS=${3:-3}
WORK=${WORK:-/tmp/replay-bench-$PORT}
DB=${DB:-replaybench_$PORT}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
TAIL_OUT=${TAIL_OUT:-$WORK/tail.out}
if [ "$(id -u)" = 0 ]; then NICE=${NICE:--5}; else NICE=${NICE:-0}; fi
mkdir -p "$WORK"
nice -n 19 go build -o bin/ ./cmd/keysctl ./cmd/keysbench github.com/nats-io/nats-server/v2

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
if [ -n "${NATS_PID:-}" ]; then # a nats-server already serving $WORK/js on PORT: left running
	listening || { echo "nothing listens on $PORT" >&2; exit 1; }
else
	bin/nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
	NATS_PID=$!
	trap 'kill $NATS_PID 2>/dev/null || true' EXIT
	for _ in $(seq 50); do listening && break; sleep 0.2; done
fi
N=nats://127.0.0.1:$PORT
if [ ! -f "$WORK/seeded-$EVENTS" ]; then
	bin/keysbench seed --nats-url "$N" --secret-file "$WORK/secret" --events "$EVENTS" | tail -1
	touch "$WORK/seeded-$EVENTS"
fi
psql -qAt "$PG/postgres" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 ||
	psql -q "$PG/postgres" -c "CREATE DATABASE $DB"
K=(--nats-url "$N" --secret-file "$WORK/secret")
D=(--database-url "$PG/$DB")

server_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$NATS_PID/stat"; }
# run NAME CMD...: one line: name, start (UTC), load, wall s, user s, sys s, peak RSS KB,
# nats-server CPU s, and the command's last line of stdout (its JSON summary, if any).
run() {
	local name=$1; shift
	local load s0 s1 out
	load=$(cut -d' ' -f1 /proc/loadavg)
	s0=$(server_cpu)
	out=$(nice -n "$NICE" /usr/bin/time -f '%e\t%U\t%S\t%M' -o "$WORK/time" "$@" | tail -1)
	s1=$(server_cpu)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(date -u +%H:%M:%S)" "$load" "$(cat "$WORK/time")" \
		"$(echo "$s1 - $s0" | bc)" "$out"
}

printf 'command\tend\tload\twall_s\tuser_s\tsys_s\tpeak_rss_kb\tnats_server_cpu_s\tsummary\n'
for r in $(seq "$ROUNDS"); do
	run read-stream bin/keysbench read-stream --nats-url "$N"
	run read-stream-all bin/keysbench read-stream --nats-url "$N" --all
	if [ -n "${KEYSCTL_BEFORE:-}" ]; then
		run replay-before "$KEYSCTL_BEFORE" replay "${K[@]}" "${D[@]}" --compare-copy
	fi
	run replay bin/keysctl replay "${K[@]}" "${D[@]}" --compare-copy
	run verify bin/keysctl verify "${K[@]}" "${D[@]}"
	read -r P KEY < <(psql -qAt -F' ' "$PG/$DB" -c "SELECT project_id, id FROM keyledger.api_keys ORDER BY last_seq DESC LIMIT 1")
	run keys-state-at bin/keysctl keys state "${K[@]}" --project "$P" --key "$KEY" --at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	if [ -n "${KEYSCTL_BEFORE:-}" ]; then
		run tail-before bash -c "exec $KEYSCTL_BEFORE events tail ${K[*]} > $TAIL_OUT.before"
	fi
	run tail bash -c "exec bin/keysctl events tail ${K[*]} > $TAIL_OUT"
	if [ -n "${KEYSCTL_BEFORE:-}" ] && [ "$r" = 1 ]; then
		cmp "$TAIL_OUT.before" "$TAIL_OUT" && echo "# tail output identical to the before build's ($(stat -c %s "$TAIL_OUT") bytes)"
	fi
done
