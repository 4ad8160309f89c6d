# Two commands: `make run` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
ENV := source build/env.sh &&
# -count=1: every run measures. -p 1: one package at a time, because the
# latency, failover and browser tests time real work on a 2-core machine.
GO_TEST_FLAGS ?= -race -count=1 -p 1

.PHONY: setup build run test vet bench bench-go fuzz clean

setup:
	@bash scripts/setup.sh

build: setup
	$(ENV) go build -o bin/prism ./cmd/prism

run: build
	$(ENV) ./bin/prism serve --demo

vet: setup
	$(ENV) test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(ENV) go vet ./...

# Key figures measured by the tests (latency, switch times, failover) are
# collected in build/report/report.txt and printed at the end.
test: build vet
	@rm -rf build/report
	$(ENV) PRISM_REPORT_DIR=$(CURDIR)/build/report go test $(GO_TEST_FLAGS) -timeout 25m ./... 2>&1 | tee build/test.log; \
	  status=$${PIPESTATUS[0]}; \
	  echo; echo "== measured =="; cat build/report/report.txt 2>/dev/null; \
	  echo; echo "== go test =="; grep -E '^(ok|FAIL|\?)[[:space:]]' build/test.log; exit $$status

# Transcode throughput against the FFmpeg CLI on the same ladder, in one run.
bench: build
	$(ENV) bash benchmarks/run.sh

fuzz: setup
	$(ENV) go test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./transcode/ladder/

clean:
	rm -rf bin build

# Side-by-side Go benchmarks (Prism vs the FFmpeg CLI, same clip and ladder).
bench-go: setup
	$(ENV) go test -run '^$$' -bench . -benchtime 3x ./benchmarks/
