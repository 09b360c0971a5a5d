# PrivyNet-rs: one command runs the pipeline, one runs exactly what CI runs.
#
#   make pipeline                 run pipelines/cifar10-squeezenet.yaml end to end (about 30 min on 2 cores)
#   make pipeline-exhaustive      the same over the whole grid, for the optimizer's regret
#   make pipeline-full            the paper-scale manifest (hours on 2 cores)
#   make smoke                    the same on a few hundred images
#   make chaos                    the smoke pipeline killed at 30 random moments, rerun, compared
#   make fuzz                     the parsers fed 20,000 mutated inputs per property
#   make test                     fmt check + clippy -D warnings + all tests, with the services they
#                                 need started (what CI runs; PRIVYNET_TEST_OPT_OUT=slurm,s3,python,
#                                 mirror-models to run the rest on a machine that cannot have them)
#   make bench                    benchmarks that print figures (BENCH=extract or nn: one part;
#                                 BENCH=steps or variants: training steps only, no data needed;
#                                 BENCH=kernels: the project's convolution backward against burn's;
#                                 BENCH=inversion: the optimisation attack's settings on a finished run;
#                                 BENCH=predict: privynet predict on the default run's deploy/ against
#                                 ONNX Runtime alone;
#                                 PRIVYNET_TORCH_PYTHON=a python with torch, for PyTorch's figures)
#   make model-zoo                torchvision's ResNet-18, MobileNetV2/V3-Small and ShuffleNetV2 exported
#                                 by both PyTorch exporters, listed, sliced and checked against ONNX
#                                 Runtime, in ORT and burn (scripts/model-zoo.py; PRIVYNET_TORCH_PYTHON)
#   make data [DATA_MIRROR=DIR]   CIFAR-10 and SqueezeNet 1.1 under data/, checksummed
#   make final                    the choice's final training and deploy/ (after a change to `final`)
#   make ingest|slice|extract|train|...|deploy   rerun one stage of MANIFEST (TOPOLOGY=fire3-d8 for one;
#                                 `privynet stages` lists each stage's binary, files and what makes it stale)
#   make status                   what is stale in MANIFEST and why
#   make slurm-up | slurm-down     a single-node Slurm cluster on loopback (installs slurm-wlm and munge
#                                 from Debian as root); then `privynet run MANIFEST --executor slurm`
#   make s3-up | s3-down           a real S3 server on loopback (Ceph's radosgw, installed from Debian as
#                                 root); then `source /tmp/privynet-s3/env` and
#                                 `privynet run MANIFEST --set storage.cloud=s3://privynet/runs/NAME`
#
# Every target builds with the release profile, so tests, pipeline and bench share one build.

CARGO    ?= cargo
MANIFEST ?= pipelines/cifar10-squeezenet.yaml
BIN      := target/release
TOPOLOGY ?=
JOBS     ?=

RUN_FLAGS := $(if $(TOPOLOGY),--topology $(TOPOLOGY)) $(if $(JOBS),-j $(JOBS))

# One target per stage, named as the stages are declared (crates/privynet/src/stage.rs), so a
# new stage has its target with no edit here; `privynet stages` lists them (checked by
# tests/help.rs).
STAGES := $(shell sed -n 's/^ *name: "\([a-z-]*\)",$$/\1/p' crates/privynet/src/stage.rs)

.PHONY: all build ort data pipeline pipeline-exhaustive pipeline-full final smoke chaos fuzz status test lint \
        test-services fmt bench model-zoo clean distclean slurm-up slurm-down s3-up s3-down stage-names $(STAGES)

all: build

ort:
	@scripts/install-ort.sh

data:
	@scripts/fetch-data.sh

# Cargo runs only when a source is newer than the last build, so that an up-to-date
# `make pipeline` costs the runner's own check (tens of milliseconds), not cargo's (~0.5 s).
SOURCES := Cargo.toml Cargo.lock $(shell find crates schemas -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.yaml' \))
STAMP   := $(BIN)/.privynet-built

$(STAMP): $(SOURCES)
	$(CARGO) build --release --workspace --bins
	@touch $@

build: ort $(STAMP)

pipeline: build data
	$(BIN)/privynet run $(MANIFEST) $(RUN_FLAGS)

# The whole grid in the same run folder: the sampled topologies are reused, the rest are added,
# and the optimizer reports the model-based choice's regret.
pipeline-exhaustive: build data
	$(BIN)/privynet run $(MANIFEST) --set optimize.mode=exhaustive $(RUN_FLAGS)

pipeline-full: build data
	$(BIN)/privynet run pipelines/cifar10-squeezenet-full.yaml $(RUN_FLAGS)

# The chosen topology's final training and deploy/ (what `make pipeline` ends with), after a
# change to the `final` section or a new decision; every other node is checked and skipped.
final: build data
	$(BIN)/privynet run $(MANIFEST) --until deploy $(RUN_FLAGS)

smoke: build data
	$(BIN)/privynet run pipelines/smoke.yaml $(RUN_FLAGS)

# The fuzzed parsers (manifest, artifact readers, ONNX loading and shape inference) with many
# cases; make test runs 256 per property.
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} $(CARGO) test --release --workspace --test fuzz

# Kills the smoke pipeline at random moments and checks that reruns end as an uninterrupted run
# (tests/chaos.rs; make test runs 4 kills). PRIVYNET_CHAOS_KILLS, PRIVYNET_CHAOS_SEED to vary.
chaos: build data
	PRIVYNET_CHAOS_KILLS=$${PRIVYNET_CHAOS_KILLS:-30} $(CARGO) test --release --test chaos -- --nocapture

slurm-up:
	@scripts/slurm-up.sh

slurm-down:
	@scripts/slurm-down.sh

s3-up:
	@scripts/s3-up.sh

s3-down:
	@scripts/s3-down.sh

status: build
	$(BIN)/privynet status $(MANIFEST)

$(STAGES): build data
	$(BIN)/privynet run $(MANIFEST) --stage $@ $(RUN_FLAGS)

stage-names:
	@echo $(STAGES)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Slurm, the S3 server and Python polars/pyarrow, unless opted out (scripts/test-services.sh).
test-services:
	@scripts/test-services.sh

# The tests run the binaries of the one workspace build; a check that was opted out is
# counted in the last line (tests/support: `unavailable`), never skipped in silence. Then:
# every package alone builds from that build, without recompiling a dependency.
test: ort data lint test-services $(STAMP)
	@rm -f target/test-opt-outs.txt
	$(CARGO) test --release --workspace
	@scripts/check-one-build.sh
	@n=$$(cat target/test-opt-outs.txt 2>/dev/null | wc -l); \
	 echo "make test: all passed; $$n check(s) opted out$$( [ $$n -gt 0 ] && printf ': %s' "$$(cut -d: -f1 target/test-opt-outs.txt | sort | uniq -c | xargs)")"

# The benchmark binary of the workspace build: no second build with other features.
bench: build data
	$(BIN)/privynet-bench $(BENCH)

PRIVYNET_TORCH_PYTHON ?= python3
model-zoo: build
	$(PRIVYNET_TORCH_PYTHON) scripts/model-zoo.py --burn

clean:
	rm -rf runs

distclean: clean
	rm -rf target .cache
	find data -mindepth 1 ! -name README.md ! -name checksums.sha256 -delete
