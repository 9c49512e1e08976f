# keyledger's developer commands. `make test` is the project's test command: it brings up the
# PostgreSQL the integration tests use (scripts/ensure-postgres.sh), then vets and runs every
# test with the race detector. NATS needs no setup: tests start their own servers.

GO   ?= go
PKGS ?= ./...
ARGS ?=

.PHONY: run build test-binaries test test-short crash-test cluster-test fuzz lint cluster cluster-down cluster-status cluster-clean
.DEFAULT_GOAL := build

## run: start keysd with its defaults (embedded NATS, in-process read model); ARGS="..." adds flags
run:
	$(GO) run ./cmd/keysd $(ARGS)

## build: build keysd, keysctl and keysbench into bin/
build:
	$(GO) build -o bin/ ./cmd/...

## test-binaries: the executables the tests run as processes (keysd, keysctl, keysbench,
## nats-server), built once into TESTBIN for every package's tests (internal/testenv.Binary)
TESTBIN ?= $(CURDIR)/bin/test
TESTENV = KEYLEDGER_TEST_BINARIES=$(TESTBIN)
test-binaries:
	$(GO) build -o $(TESTBIN)/ ./cmd/keysd ./cmd/keysctl ./cmd/keysbench github.com/nats-io/nats-server/v2

## test: THE test command: PostgreSQL up, go vet, every test with -race
test: test-binaries
	scripts/ensure-postgres.sh
	$(GO) vet $(PKGS)
	$(TESTENV) $(GO) test -race -count=1 -timeout 30m $(PKGS)

## test-short: the quick loop: tests in -short mode, no race detector; tests marked
## testenv.Heavy (clusters, crash loops, most keysd processes, benchmark runs) and the suites'
## heavy cases are skipped, and go test's cache answers for packages nothing changed in (it
## tracks the test executables in bin/test too); `make test` runs everything, every time
test-short: test-binaries
	scripts/ensure-postgres.sh
	$(TESTENV) $(GO) test -short -timeout 10m $(PKGS)

## crash-test: the crash tests (kill -9, NATS restart, read model cut off) with more rounds
## than `make test` runs; ROUNDS=N sets how many faults each injects (default 5)
ROUNDS ?= 5
crash-test: test-binaries
	scripts/ensure-postgres.sh
	$(TESTENV) $(GO) test -race -count=1 -timeout 30m -v -run 'Crash|TestTwoInstances' ./cmd/keysd -args -crash.rounds=$(ROUNDS)

## cluster-test: the cluster tests (3 nats-server processes, 2 keysd --stream-replicas 3, one
## PostgreSQL: leader kill -9, frozen follower, keysd kill, quorum loss; R1 -> R3 online) with
## more rounds than `make test` runs; CLUSTER_ROUNDS=N (default 3). Timings are logged, not asserted.
cluster-test: test-binaries
	scripts/ensure-postgres.sh
	$(TESTENV) $(GO) test -race -count=1 -timeout 30m -v -run 'TestCluster' ./cmd/keysd -args -cluster.rounds=$(or $(CLUSTER_ROUNDS),3)

## fuzz: run each fuzzer for FUZZTIME (default 60s), one at a time; `make test` runs their corpora
FUZZTIME ?= 60s
FUZZERS = api:FuzzDecodeUpdate api:FuzzDecodeCreate api:FuzzDecodeCheck api:FuzzPatchHandler \
	domain:FuzzParseSecretKey domain:FuzzUnmarshalEvent
fuzz:
	@set -e; for f in $(FUZZERS); do \
		pkg=$${f%%:*}; name=$${f#*:}; echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME); \
	done

## lint: gofmt must have nothing to change; go vet must pass; every import must be an arrow
## of docs/architecture.md (internal/arrows, also run by `make test` with every other test)
lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./internal/arrows

## cluster: on loopback, without Docker: a 3-node NATS cluster (JetStream, routes), PostgreSQL
## and two keysd with --stream-replicas 3 and one secret file; prints the URLs. State in
## ./.cluster (CLUSTER_DIR=...; CLUSTER_PORT_BASE=N for fixed ports); see scripts/cluster.sh
cluster:
	scripts/cluster.sh up

## cluster-down: stop what `make cluster` started (data kept: `make cluster` again resumes)
cluster-down:
	scripts/cluster.sh down

## cluster-status: which of the cluster's processes run
cluster-status:
	scripts/cluster.sh status

## cluster-clean: stop the cluster, delete ./.cluster and drop its database
cluster-clean:
	scripts/cluster.sh clean
