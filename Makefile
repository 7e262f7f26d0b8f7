GO ?= go

.PHONY: test unit npm-deps fuzz bench bench-agent lint build run postgres e2e manifests

## test: everything CI runs: vet, unit and integration tests (incl. the npm client).
test: npm-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

npm-deps:
	@if command -v npm >/dev/null; then cd test/npm && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the @aws-sdk/client-eks test will skip (it fails in CI)"; fi

## e2e: the end-to-end suite on a real kube-apiserver and etcd (see
## docs/testing.md). The first run builds kube-apiserver (~10 min on 2 cores)
## and caches it in $XDG_CACHE_HOME/podid-e2e (default ~/.cache/podid-e2e).
e2e:
	cd test/e2e && $(GO) run ./cmd/prepare
	cd test/e2e && $(GO) test -count=1 -timeout 40m ./...

## manifests: render every deploy/ overlay with kustomize and check it
## (strict API types, flags against the real binary; see test/manifests).
manifests:
	cd test/manifests && $(GO) vet ./... && $(GO) test -count=1 ./...

## fuzz: every fuzz target for FUZZTIME (default 10s) each; CI runs 5s.
fuzz:
	bash scripts/fuzz.sh

unit:
	$(GO) test -count=1 ./...

## bench: the benchmarks recorded in docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-agent: the podid agent load run in docs/benchmarks.md (3 to 6 minutes, loopback only).
bench-agent:
	GO=$(GO) $(GO) run ./test/load/agentload

## postgres: start a throwaway PostgreSQL for the store tests (installs it if
## missing) and print the export line: eval "$$(make -s postgres)" && make test
postgres:
	@bash scripts/postgres-test.sh

lint:
	gofmt -l . | (! grep .) || (echo "gofmt needed on the files above"; exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

build:
	$(GO) build -o bin/podid ./cmd/podid

run:
	$(GO) run ./cmd/podid server
