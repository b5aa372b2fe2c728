# memdiag — run `make help` for the targets.
# sudo resets PATH on many systems: fall back to the usual Go install.
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# How memdiag itself is built (make build, make image and the tests that
# build it do the same): urfave/cli's man and markdown writers (blackfriday,
# go-md2man) are never used, and without cgo the binary is static, so no
# process maps libc and ld.so; each saves resident memory in every memdiag
# process (BENCHMARKS.md, "memdiag's own memory").
TAGS      := urfave_cli_no_docs
# Fuzzing budget per target: a count of executions, not a duration. With a
# duration, Go 1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" as the time runs out on a busy machine
# (golang/go#75804, fixed in Go 1.27), with no failing input found.
FUZZTIME  ?= 100000x
# The image `make image` builds, and the archive it writes.
IMAGE_REPO ?= ghcr.io/memdiag/memdiag
IMAGE      ?= $(IMAGE_REPO):$(VERSION)
IMAGE_OUT  ?= out/memdiag-image.tar

.PHONY: help build install image generate check-generated test test-unprivileged soak accuracy fuzz bench lint demo vagrant-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/memdiag, static (needs only Go: the BPF object is committed)
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/memdiag ./cmd/memdiag

PREFIX ?= /usr/local

install: build ## put memdiag on the PATH: install bin/memdiag as $(PREFIX)/bin/memdiag (root: sudo make install)
	install -D -m 0755 $(BIN)/memdiag $(DESTDIR)$(PREFIX)/bin/memdiag

image: ## build $(IMAGE_OUT): an OCI image (FROM scratch, static binary, user nonroot) without Docker; load or push it (README)
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/memdiag-static ./cmd/memdiag
	@mkdir -p $(dir $(IMAGE_OUT)) && rm -f $(IMAGE_OUT)
	$(GO) run ./deploy/image -binary $(BIN)/memdiag-static -ref $(IMAGE) -o $(IMAGE_OUT) \
	  -revision "$$(git rev-parse HEAD 2>/dev/null)" -created "$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null)}"

generate: ## recompile the BPF program and its Go bindings (needs clang, libbpf-dev)
	$(GO) generate .

check-generated: generate ## fail when the committed BPF object or bindings are stale
	git diff --exit-code -- tracer/memdiag_x86_bpfel.go tracer/memdiag_x86_bpfel.o

test: ## run every test under the race detector, privileged ones included (run as root: sudo make test)
	$(GO) test -race -tags privileged -count=1 -parallel 3 -timeout 20m ./...

test-unprivileged: ## run the tests that need no root, under the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

soak: ## five minutes under load: memdiag's own RSS stays flat (root: sudo make soak)
	$(GO) test -tags privileged -count=1 -timeout 20m -run '^TestSoak$$' ./cmd/memdiag -soak -v

# The npm services of the accuracy corpus, installed from their lock files.
ACCURACY_NPM := testdata/corpus/node-session examples/leaky-service

accuracy: ## run memdiag on every accuracy-corpus service, write out/accuracy/*.md (root; see ACCURACY.md)
	@for d in $(ACCURACY_NPM); do test -d $$d/node_modules || (cd $$d && npm ci --no-audit --no-fund --loglevel=error); done
	MEMDIAG_ACCURACY=all $(GO) test -tags privileged -count=1 -timeout 20m -run TestAccuracy -v ./accuracy

fuzz: ## run each fuzz target for FUZZTIME
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

bench: build ## run the benchmarks (root) and print the results for BENCHMARKS.md
	$(GO) run ./bench

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet -tags privileged ./...

demo: build ## trace the built-in demo workload (root: sudo make demo)
	./scripts/demo.sh

vagrant-test: ## run `make test` in a fresh VM (see Vagrantfile)
	vagrant up --provision && vagrant rsync && vagrant ssh -c 'cd /vagrant && sudo make test'

clean: ## remove build outputs
	rm -rf $(BIN) out
