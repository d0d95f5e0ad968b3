# agentcg build entry points. Every target is a thin call into Go or scripts/.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# TRACES: folder whose sub-folders (each with resources.json) are baked into the replay image.
TRACES  ?= replayimage/traces
GO      ?= go
LDFLAGS := -s -w -X github.com/agentcg/agentcg/internal/version.Version=$(VERSION)
BINS    := agentcg agentcg-replay agentcg-nri agentcg-hook agentcg-runc

.PHONY: build test check deps vmtest vmtest-kube image images manifests manifests-check dist deb bench soak generate experiment kernel clean help

help:
	@echo "make build       static binaries into bin/"
	@echo "make check       THE test command: unit tests, then the VM tier (installs qemu/debootstrap if missing)"
	@echo "make test        unit tests only (no root, no VM)"
	@echo "make vmtest      VM tier: boot the patched kernel in qemu and run the vmtest-tagged tests"
	@echo "make vmtest-kube VM tier, systemd profile: the plugin and annotated pods under a real kubelet (builds it once)"
	@echo "make image       build/agentcg-replay.tar without a Docker daemon (TRACES=dir to bake other traces)"
	@echo "make images      build/images/: replay, agentcg-nri and pause images, docker-archive and OCI tars"
	@echo "make manifests   render deploy/helm/agentcg into deploy/manifests/agentcg.yaml (manifests-check: compare)"
	@echo "make dist        dist/: static binaries, tarball, .deb, image tars, SHA256SUMS; runs every binary with --version"
	@echo "make bench       replay vs raw touch, parser; VM: ops page-fault ratios, LOW throttling, hook attach under 20 concurrent docker runs"
	@echo "make soak        VM: 1000 create/remove cycles, Docker and CRI, plugin restarts; 0 pins/links/records left (SOAK_CYCLES=N)"
	@echo "make generate    rebuild the BPF objects with bpf2go (needs clang)"
	@echo "make experiment  run the default experiment (VM mode on machines without the patched kernel)"
	@echo "make kernel      build the memcg BPF kernel (KERNEL_ARGS='--profile node', '--patches DIR', ...; see scripts/kernel/README.md)"

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/... ./replayimage/cmd/... ./plugin/cmd/... ./hook/cmd/...

test:
	$(GO) vet ./...
	$(GO) test ./...

check: test manifests-check vmtest vmtest-kube

deps:
	scripts/deps.sh

vmtest: deps build image deb
	scripts/vm/vmtest.sh

# systemd as PID 1, containerd with SystemdCgroup = true, a standalone kubelet
# (scripts/vm/build-kubelet.sh, cached) and the vmtest_systemd-tagged tests.
# The plugin runs from the chart rendered here with the test's allowlist
# (internal/kubetest reads build/kubetest/agentcg.yaml) and the image from
# `make images`.
vmtest-kube: deps build image images deb
	@mkdir -p build/kubetest
	$(RENDER) --set 'config.high.namespaces={agents-prod}' --set config.mode=bpf --out ../../build/kubetest/agentcg.yaml
	scripts/vm/vmtest.sh --profile systemd

image: build
	bin/agentcg-image replay --binary bin/agentcg-replay --traces $(TRACES) --out build/agentcg-replay.tar

# Every image as a docker-archive tar (docker load, ctr images import) and an
# OCI image-layout tar, built without a daemon (replayimage/image).
images: build
	@mkdir -p build/images
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o build/images/pause ./scripts/vm/pause
	bin/agentcg-image replay --binary bin/agentcg-replay --traces $(TRACES) --out build/images/agentcg-replay.tar --oci build/images/agentcg-replay.oci.tar
	bin/agentcg-image nri --binary bin/agentcg-nri --out build/images/agentcg-nri.tar --oci build/images/agentcg-nri.oci.tar
	bin/agentcg-image pause --binary build/images/pause --out build/images/agentcg-pause.tar --oci build/images/agentcg-pause.oci.tar
	@rm -f build/images/pause

# The chart is rendered with Helm's own engine from a separate tool module
# (deploy/tools), so the main go.mod stays free of Helm and nfpm.
RENDER := cd deploy/tools && $(GO) run ./cmd/render-chart --chart ../helm/agentcg
manifests:
	$(RENDER) --lint --out ../manifests/agentcg.yaml

manifests-check:
	$(RENDER) --lint --check --out ../manifests/agentcg.yaml
	cd deploy/tools && $(GO) vet ./... && $(GO) test ./...

# Release artefacts in dist/ (deploy/tools/cmd/dist, nfpm as a library):
# every binary is run with --version and --help first.
DIST := cd deploy/tools && $(GO) run ./cmd/dist --root ../.. --version $(VERSION)
dist: build images manifests-check
	$(DIST) --out dist
	@cat dist/SHA256SUMS

# Only the .deb, into build/deb/: the VM tier installs it with dpkg -i.
deb: build
	$(DIST) --deb-only --out build/deb

bench: deps build
	scripts/bench.sh

# SOAK_CYCLES create/remove cycles (hook/churn_vm_test.go); 1000 took 40 min 25 s (host load 1-2.8; hook/README.md).
soak: deps build
	AGENTCG_SOAK_CYCLES=$${SOAK_CYCLES:-1000} AGENTCG_TEST_TIMEOUT=$${SOAK_TEST_TIMEOUT:-240m} \
		scripts/vm/vmtest.sh --no-selftest --timeout 15000 --run TestVMChurnMixed hook

generate:
	$(GO) generate ./bpf/...

experiment: deps build image
	scripts/experiment.sh $(EXPERIMENT_ARGS)

# Not part of check/.ci/run. qemu profile: 6,852 s measured here under load 13-23; the bzImage alone
# took 586-615 s on an idle 2-core host (../shared/kernel/README.md). scripts/kernel/README.md has the table.
kernel:
	scripts/kernel/build.sh $(KERNEL_ARGS)

clean:
	rm -rf bin build dist
