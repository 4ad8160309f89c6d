# Two commands: `make run` and `make test`. Everything else is set up by them.
# `make` alone lists the targets (from the `## ` comments below).
SHELL := /bin/bash
ENV := source build/env.sh &&
.DEFAULT_GOAL := help
# -count=1: every run measures. -p 1: one package at a time, because the
# latency, failover and browser tests time real work on a 2-core machine.
GO_TEST_FLAGS ?= -race -count=1 -p 1
# `make test-unit`: the fast tests, no FFmpeg run, no browser, no NATS
# cluster (one embedded server at most; the media tests use a fake source).
# -short skips the tests in these packages that run the transcoder.
UNIT_PKGS ?= ./pipeline/... ./config/... ./transcode/ladder/... ./deploy/... ./internal/yamlfile/... \
  ./internal/archtest/... ./queue/bus/... ./queue/jobs/... ./queue/relay/... ./queue/worker/...
GOLANGCI_LINT_FLAGS ?= --timeout 10m

# Go files of the working tree (tracked or new, not ignored) that exist on disk.
GO_FILES = git ls-files -co --exclude-standard -- '*.go' | while read -r f; do [[ ! -f $$f ]] || echo "$$f"; done
GOFMT_CHECK = files=$$($(GO_FILES) | xargs -r gofmt -l); \
  [[ -z $$files ]] || { echo "$$files"; echo 'gofmt: files above need formatting'; false; }

.PHONY: help setup build nats-server run test test-unit test-cluster-long lint vet bench bench-go bench-ingest bench-webrtc bench-glass bench-hls-players bench-cluster-sim bench-nodeload bench-events fuzz clean

help: ## List the targets
	@echo 'Usage: make [target]   (variables: GO_TEST_FLAGS, UNIT_PKGS, GOLANGCI_LINT_FLAGS)'
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F ':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

setup: ## Install packages, FFmpeg, golangci-lint and Go modules (idempotent)
	@bash scripts/setup.sh

build: setup ## Build bin/prism
	$(ENV) go build -o bin/prism ./cmd/prism

# The cluster tests (cmd/prism survive_test.go) kill real nats-server
# processes: the server is built from the module in go.mod, never committed.
nats-server: setup ## Build build/bin/nats-server for the cluster tests
	$(ENV) go build -o build/bin/nats-server github.com/nats-io/nats-server/v2

run: build ## Build and serve the demo
	$(ENV) ./bin/prism serve --demo

vet: setup ## gofmt check and go vet
	@$(ENV) $(GOFMT_CHECK)
	$(ENV) go vet ./...

# All three checks run, so one pass shows every finding; fails if any failed.
lint: setup ## gofmt check, go vet and golangci-lint (.golangci.yml)
	@$(ENV) command -v golangci-lint >/dev/null || { echo 'lint: golangci-lint is not installed (see scripts/setup.sh output)'; exit 1; }; \
	  status=0; \
	  echo '== gofmt =='; { $(GOFMT_CHECK); } || status=1; \
	  echo '== go vet =='; go vet ./... || status=1; \
	  echo "== $$(golangci-lint version --short 2>/dev/null | sed 's/^/golangci-lint /') =="; \
	  golangci-lint run $(GOLANGCI_LINT_FLAGS) ./... || status=1; \
	  exit $$status

# Key figures measured by the tests (latency, switch times, failover) are
# collected in build/report/report.txt and printed at the end.
test: build nats-server lint ## Lint, then the whole test suite (-race, one package at a time)
	@rm -rf build/report
	$(ENV) PRISM_REPORT_DIR=$(CURDIR)/build/report go test $(GO_TEST_FLAGS) -timeout 25m ./... 2>&1 | tee build/test.log; \
	  status=$${PIPESTATUS[0]}; \
	  echo; echo "== measured =="; cat build/report/report.txt 2>/dev/null; \
	  echo; echo "== go test =="; grep -E '^(ok|FAIL|\?)[[:space:]]' build/test.log; exit $$status

# The node kill with a 720p30 source and the default ladder, on an external
# and on the embedded cluster: minutes of real encoding, so not in `make test`.
test-cluster-long: build nats-server ## Node kill, 720p30 source, default ladder (external and embedded cluster)
	$(ENV) PRISM_TEST_CLUSTER_LONG=1 go test -count=1 -v -timeout 20m -run '^TestClusterNodeKill720p$$' ./cmd/prism/

test-unit: setup ## Quick unit tests (-short) over UNIT_PKGS
	@$(ENV) dirs=(); \
	  for p in $(UNIT_PKGS); do \
	    d=$${p%/...}; if [[ -d $$d ]]; then dirs+=("$$p"); else echo "test-unit: skipping $$p (no such directory)"; fi; \
	  done; \
	  (($${#dirs[@]})) || { echo 'test-unit: none of UNIT_PKGS exists'; exit 1; }; \
	  pkgs=$$(go list "$${dirs[@]}") || exit 1; \
	  [[ -n $$pkgs ]] || { echo 'test-unit: UNIT_PKGS matched no packages'; exit 1; }; \
	  go test -short -count=1 $$pkgs

# Transcode throughput against the FFmpeg CLI on the same ladder, in one run.
bench: build ## Throughput against the FFmpeg CLI (benchmarks/run.sh)
	$(ENV) bash benchmarks/run.sh

# Every fuzz target, as package:name; `make fuzz` runs them one after
# another, FUZZTIME each, and fails at the end if any found a failing input
# (written to the package's testdata/fuzz/<name>/; commit it as a regression).
# go1.26's fuzz coordinator can end a run that found nothing with a bare
# "context deadline exceeded" (go.dev/issue/75804): reported, not counted.
FUZZTIME ?= 10s
FUZZ_TARGETS ?= \
  ./transcode/ladder:FuzzParse \
  ./internal/auth:FuzzAuthorize \
  ./queue/relay:FuzzDecodeMessage \
  ./queue/jobs:FuzzSpec \
  ./config:FuzzConfigParse \
  ./pipeline:FuzzH264 \
  ./outputs/hls:FuzzHLSPath \
  ./outputs/hls:FuzzHLSDirectives \
  ./outputs/hls:FuzzWithToken \
  ./outputs/webrtc:FuzzInspectOffer \
  ./outputs/webrtc:FuzzTrickleFragment \
  ./outputs/webrtc:FuzzWHEPPath \
  ./outputs/webrtc:FuzzBWEFeedback \
  ./pipeline/ingest/rtmp:FuzzParseURL \
  ./pipeline/ingest/rtmp:FuzzAccessUnit \
  ./pipeline/ingest/rtmp:FuzzMetadataFPS \
  ./pipeline/ingest/rtmp:FuzzConn \
  ./pipeline/ingest/srt:FuzzParseStreamID \
  ./pipeline/ingest/srt:FuzzAligner \
  ./pipeline/ingest/whip:FuzzDepacketize \
  ./pipeline/ingest/whip:FuzzVP8Size \
  ./pipeline/ingest/whip:FuzzInspectOffer \
  ./pipeline/ingest/whip:FuzzParseSDPFrag \
  ./outputs/webrtc:FuzzDataChannelMessage

fuzz: setup ## Run every fuzz target (FUZZ_TARGETS) for FUZZTIME (10s) each
	@$(ENV) failed=(); log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	  for t in $(FUZZ_TARGETS); do \
	    pkg=$${t%%:*}; name=$${t##*:}; \
	    echo "== $$name ($$pkg, $(FUZZTIME)) =="; \
	    go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" 2>&1 | tee "$$log"; \
	    if ((PIPESTATUS[0] == 0)); then continue; fi; \
	    if grep -q '^    context deadline exceeded$$' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
	      echo "fuzz: $$name: spurious end-of-run deadline (go.dev/issue/75804), not counted"; continue; \
	    fi; \
	    failed+=("$$t"); \
	  done; \
	  (($${#failed[@]} == 0)) || { echo "fuzz: failed: $${failed[*]}"; exit 1; }

clean: ## Remove bin/ and build/
	rm -rf bin build

# Push ingest latency: the FFmpeg CLI pushes 720p30 RTMP to bin/prism
# (default ladder); publisher AU in -> LL-HLS part and -> WebRTC viewer.
bench-ingest: build ## Push ingest latency (RTMP 720p30, default ladder): p50/p95 to LL-HLS and WebRTC
	$(ENV) PRISM_BENCH_INGEST=1 go test -count=1 -v -run TestIngestLatency ./benchmarks/

# Glass to glass: the demo source stamps each frame's capture time in the
# picture; the player page in Chromium reads it back from the displayed
# frames over WebRTC and LL-HLS (GLASS_LADDER, a shipped name or a file) for
# GLASS_SECONDS.
GLASS_SECONDS ?= 60
GLASS_LADDER ?= default
bench-glass: build ## Glass to glass (picture stamp), WebRTC and LL-HLS: median/p95 over GLASS_SECONDS (60)
	$(ENV) PRISM_BENCH_GLASS=$(GLASS_SECONDS) PRISM_BENCH_GLASS_LADDER=$(GLASS_LADDER) go test -count=1 -v -timeout $$(( $(GLASS_SECONDS) + 300 ))s -run '^TestBenchGlass$$' ./cmd/prism/

# Stock LL-HLS players against `prism serve --demo` (default ladder): hls.js
# with its defaults, hls.js with maxLiveSyncPlaybackRate 1.5, Shaka Player in
# low-latency mode; ingest-to-display latency from PROGRAM-DATE-TIME once a
# second, stalls, request timelines. HLS_PLAYERS=hlsjs,shaka picks players,
# HLS_RUNS (5) and HLS_SECONDS (60) size it: about 20 minutes as it comes.
HLS_PLAYERS ?= 1
HLS_RUNS ?= 5
HLS_SECONDS ?= 60
bench-hls-players: build ## LL-HLS latency of hls.js (default, catch-up) and Shaka, median of 5 runs
	$(ENV) PRISM_BENCH_HLS_PLAYERS=$(HLS_PLAYERS) PRISM_BENCH_HLS_RUNS=$(HLS_RUNS) PRISM_BENCH_HLS_SECONDS=$(HLS_SECONDS) \
	  go test -count=1 -v -timeout 60m -run '^TestHLSPlayers$$' ./benchmarks/

# Control plane at scale: SIM_CASES (nodes x jobs) node agents with fake
# runners in one process against one embedded NATS (SIM_SERVERS=3: a local
# R3 cluster); placement, KV traffic, 10 % of the nodes crashed, double
# owners. No -race (it is a measurement); about 5 minutes as it comes.
SIM_CASES ?= 10x1000,50x2500,100x5000
SIM_SERVERS ?= 1
SIM_STEADY ?= 10s
bench-cluster-sim: setup ## Cluster simulation: N node agents x jobs, placement, KV ops/s, 10 % crash, double owners
	$(ENV) PRISM_SIM=1 PRISM_SIM_CASES=$(SIM_CASES) PRISM_SIM_SERVERS=$(SIM_SERVERS) PRISM_SIM_STEADY=$(SIM_STEADY) \
	  PRISM_SIM_OUT=$(CURDIR)/build/cluster-sim.txt go test -count=1 -v -timeout 30m -run '^TestClusterSim$$' ./queue/jobs/; \
	  status=$$?; cat build/cluster-sim.txt 2>/dev/null; exit $$status

# Node load: NODELOAD_JOBS (2,3,4) concurrent `prism transcode` jobs, a
# lavfi source and a two-rung ladder each, sized to fill the node's
# capacity together, without and with each job's CPU share (--cpus);
# each job's speed (real-time factor) and the CPU used. About 2 minutes on
# 2 cores; results in build/nodeload.txt (benchmarks/results/ keeps runs).
NODELOAD_JOBS ?= 2,3,4
NODELOAD_SECONDS ?= 20
NODELOAD_REPS ?= 1
bench-nodeload: build ## N jobs filling the node's capacity, with and without CPU shares: speed per job, CPU
	$(ENV) PRISM_BENCH_NODELOAD=1 PRISM_BENCH_NODELOAD_JOBS=$(NODELOAD_JOBS) PRISM_BENCH_NODELOAD_SECONDS=$(NODELOAD_SECONDS) PRISM_BENCH_NODELOAD_REPS=$(NODELOAD_REPS) \
	  PRISM_BENCH_NODELOAD_OUT=$(CURDIR)/build/nodeload.txt go test -count=1 -v -timeout 30m -run '^TestNodeLoad$$' ./benchmarks/

# Side-by-side Go benchmarks (Prism vs the FFmpeg CLI, same clip and ladder).
bench-go: setup ## Go benchmarks, Prism vs the FFmpeg CLI
	$(ENV) go test -run '^$$' -bench . -benchtime 3x ./benchmarks/

# Timed events under load: 200 pion viewers with data channels, 30 s
# without events, then 30 s with 1000 events/s on the stream; latency,
# events sent and received (about 2 minutes on 2 cores).
bench-events: setup ## Timed events: 1000 events/s to 200 WebRTC viewers, latency with and without
	$(ENV) PRISM_LOAD=1 go test -count=1 -v -timeout 10m -run '^TestLoadEvents$$' ./outputs/webrtc/

# WebRTC viewer density: a replayed clip of real ladder packets to 500 pion
# viewers in a child process (only the server's CPU is counted), then the
# per-packet send path with -benchmem. About 2 minutes on 2 cores; the
# viewers need about as much CPU as the server, so run it on a quiet machine.
bench-webrtc: setup ## WebRTC density: 500 pion viewers (CPU per viewer-second, viewers/core, allocs/packet)
	$(ENV) go test -count=1 -run '^$$' -bench '^BenchmarkViewers$$' -benchtime 1x -timeout 10m ./outputs/webrtc/
	$(ENV) go test -count=1 -run '^TestSendPathAllocs$$' -bench '^BenchmarkSendPath' -benchmem -benchtime 200000x ./outputs/webrtc/
