GO ?= go

.PHONY: test unit npm-deps bench bench-agent lint build run postgres

## test: everything CI runs: vet, unit and integration tests (incl. the npm client).
test: npm-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

npm-deps:
	@if command -v npm >/dev/null; then cd test/npm && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the @aws-sdk/client-eks test will skip (it fails in CI)"; fi

unit:
	$(GO) test -count=1 ./...

## bench: the benchmarks recorded in docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-agent: the podid agent load run in docs/benchmarks.md (about 2.5 minutes, loopback only).
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
