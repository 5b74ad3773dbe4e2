# rtcedge build, test and code generation. Every tool is pinned: protoc
# plugins in go.mod's tool block, buf in tools/go.mod.

SHELL   := bash
GO      ?= go
BUF     := $(GO) tool -modfile=tools/go.mod buf
HELM    := $(GO) tool -modfile=tools/go.mod helm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Packages whose tests need more than the unit-test budget run under `e2e`.
E2E_PKGS := ./test/...
GENERATED := ':(glob)proto/**/*.pb.go' ':(glob)proto/**/*.pb.gw.go' ':(glob)proto/**/*.swagger.json'

.PHONY: all abuse soak bench build test e2e fuzz fuzz-short run images up down lint generate check-generate fmt clean ci breaking help chart-test

## ci: everything CI runs (the README's test command), with each stage's wall time
# Stages run one after another through $(MAKE), so each one's time is
# printed as it ends and all of them in a summary (also when one fails).
CI_STAGES := generate:check-generate lint:lint test:test chart:chart-test e2e:e2e chaos:chaos-short fuzz:fuzz-short
ci:
	@set -o pipefail; summary=""; ci_start=$$(date +%s); \
	report() { echo; echo "ci: stage times"; printf "$$summary"; \
		printf '  %-9s %5ss\n' total $$(( $$(date +%s) - ci_start )); }; \
	for st in $(CI_STAGES); do \
		name=$${st%%:*}; target=$${st#*:}; t0=$$(date +%s); \
		echo "==== ci: $$name ($$target) started $$(date -u +%H:%M:%S)"; \
		if $(MAKE) --no-print-directory $$target; then status=ok; else status=FAILED; fi; \
		secs=$$(( $$(date +%s) - t0 )); \
		echo "==== ci: $$name $$status in $${secs}s"; \
		summary="$$summary$$(printf '  %-9s %5ss %s' $$name $$secs $$status)\n"; \
		if [ $$status = FAILED ]; then report; exit 1; fi; \
	done; report

all: build

## build: static binaries (CGO_ENABLED=0) for every command into bin/
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

## test: unit and integration tests with the race detector (real etcd, real sockets)
test:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/test/')
	@# Allocation counts are exact only without the race detector (it makes
	@# sync.Pool drop what is put back).
	$(GO) test -count=1 -run 'Alloc' ./mediarelay/...

## e2e: end-to-end tests: pion clients through the tiers, Chromium on the demo page, the compose stack
e2e: images
	RTCEDGE_E2E_COMPOSE=1 RTCEDGE_E2E_BROWSER=1 $(GO) test -race -count=1 -timeout 15m $(E2E_PKGS)

# Fuzz targets, package:function, found in the test files (tools/ holds
# separate modules).
FUZZ_TARGETS = $(shell grep -rH --include='*_test.go' --exclude-dir=tools -o '^func Fuzz[A-Za-z0-9_]*' . | \
	sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz.*)$$|\1:\2|' | sort -u)
FUZZTIME ?= 5m

## fuzz-short: every fuzz target for 10 s (CI: the committed corpora, then 10 s of new inputs each)
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

## fuzz: every fuzz target for FUZZTIME (default 5m)
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" as -fuzztime ends while a worker is mid-input
# (golang/go#75804, fixed in Go 1.27; likelier on a loaded machine). Such
# a run wrote no failing input, so it is reported and not counted as a
# failure; any run that wrote an input under testdata/fuzz fails.
fuzz:
	@test -n "$(FUZZ_TARGETS)" || { echo "no fuzz targets found"; exit 1; }
	@set -e -o pipefail; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; corpus=$$pkg/testdata/fuzz/$$fn; \
		before=$$( { ls "$$corpus" 2>/dev/null || true; } | wc -l); \
		echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		if $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg 2>&1 | tee "$$out"; then continue; fi; \
		after=$$( { ls "$$corpus" 2>/dev/null || true; } | wc -l); \
		if [ "$$after" = "$$before" ] && grep -qx '    context deadline exceeded' "$$out" && ! grep -q 'Failing input written' "$$out"; then \
			echo "fuzz $$fn: the coordinator's deadline race at the end of -fuzztime (golang/go#75804), no failing input: not a failure"; \
			continue; \
		fi; \
		exit 1; \
	done

## bench: the benchmarks (hot path, registry, signaling) and a short load run of the relay against the C forwarder; figures go to docs/PERFORMANCE.md
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s ./mediarelay/... ./registry/ ./signaling/... ./internal/demoorigin/
	@if command -v gcc >/dev/null 2>&1; then \
		$(GO) run ./cmd/rtcedge-load compare -sessions-list 1,100 -total-rate 30000 -duration 2s -warmup 1s; \
	else echo "bench: no gcc, so no load run against the C forwarder (make bench-load)"; fi

## soak: 10 minutes of session churn with media through the whole edge; fails on goroutine or RSS growth
soak:
	RTCEDGE_SOAK=$${RTCEDGE_SOAK:-10m} $(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v $(E2E_PKGS)

## abuse: the random-ufrag STUN flood against live sessions (needs the CPU to itself; no race detector)
abuse:
	RTCEDGE_FLOOD=1 $(GO) test -count=1 -run '^TestRandomUfragFlood$$' -v ./mediarelay/

## chaos: the fault harness on the production topology (deploy/compose/cluster.yml): faults 1-7 under load, a JSON report per fault in CHAOS_OUT (docs/RELIABILITY.md)
## chaos-short: the same with faults 1, 3 and 4 (a `make ci` stage, about 3-4 minutes once `e2e` built the images)
CHAOS_OUT ?= $(CURDIR)/bin/chaos
.PHONY: chaos chaos-short
chaos: images
	RTCEDGE_CHAOS=full RTCEDGE_CHAOS_OUT=$(CHAOS_OUT) $(GO) test -race -count=1 -timeout 45m -run '^TestChaos$$' -v ./test/chaos/

chaos-short: images
	RTCEDGE_CHAOS=short RTCEDGE_CHAOS_OUT=$(CHAOS_OUT) $(GO) test -race -count=1 -timeout 10m -run '^TestChaos$$' -v ./test/chaos/

## chart-test: helm lint and helm template of deploy/helm/rtcedge with the default values and every deploy/helm/examples file, then deploy/helm/test (its own module, k8s.io/api out of go.mod): every object decoded strictly, checked against the real binaries
CHART        := deploy/helm/rtcedge
CHART_VALUES := $(wildcard deploy/helm/examples/*.yaml)
chart-test:
	@set -e; helm=$$($(GO) tool -modfile=tools/go.mod -n helm); \
	for f in "" $(CHART_VALUES); do \
		echo "helm lint and template $(CHART) $${f:+-f $$f}"; \
		$$helm lint --strict --quiet $(CHART) $${f:+-f $$f}; \
		$$helm template rtcedge $(CHART) $${f:+-f $$f} >/dev/null; \
	done
	cd deploy/helm/test && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

## run: the whole product on loopback (embedded etcd, signaling, relay, demo origin)
run:
	$(GO) run ./cmd/rtcedge

ETCD_IMAGE := gcr.io/etcd-development/etcd:v3.7.3
IMAGES     := signaling mediarelay demo-origin

## images: offline images FROM scratch from `make build` and tools/pause (the chaos topology's netns holder), and a local etcd image tagged like the official one
images: build
	@mkdir -p bin/etcd
	cd tools/etcd && CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcd/etcd go.etcd.io/etcd/server/v3
	cd tools/etcd && CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcd/etcdctl go.etcd.io/etcd/etcdctl/v3
	docker build -q -f tools/etcd/Dockerfile -t $(ETCD_IMAGE) bin/etcd
	cd tools && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o ../bin/pause ./pause
	@for b in $(IMAGES) pause; do \
		echo "image rtcedge/$$b:dev"; \
		docker build -q -f Dockerfile.scratch --build-arg BIN=$$b -t rtcedge/$$b:dev bin || exit 1; \
	done

## up: the compose stack on the offline images
up: images
	docker-compose up -d --no-build

## down: stop the compose stack and remove its containers and network
down:
	docker-compose down -v --remove-orphans

## generate: regenerate Go, gRPC, gateway and OpenAPI code from proto/
generate:
	$(BUF) generate

## check-generate: regenerate and fail if the committed code differs
check-generate: generate
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "generated code is stale; run 'make generate' and commit:"; \
		git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); exit 1; \
	fi

## lint: buf lint, buf format, gofmt and go vet
lint:
	$(BUF) lint
	$(BUF) format -d --exit-code
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## breaking: compare the protos with main's
breaking:
	$(BUF) breaking --against '.git#branch=main'

fmt:
	gofmt -w $$(git ls-files '*.go')
	$(BUF) format -w

clean:
	rm -rf bin

help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

## bench-load: relay vs C forwarder, CPU per forwarded packet (rtcedge-load compare; about a minute, needs gcc)
.PHONY: bench-load bench-setups
bench-load:
	$(GO) run ./cmd/rtcedge-load compare -sessions-list $${SESSIONS:-1,100,1000} -total-rate $${RATE:-30000} -duration 5s -warmup 2s

## bench-setups: WHIP setups/s and added latency through separate signaling, relay and etcd processes (rtcedge-load setups)
bench-setups:
	$(GO) run ./cmd/rtcedge-load setups -clients $${CLIENTS:-1,64} -duration 8s -warmup 2s
