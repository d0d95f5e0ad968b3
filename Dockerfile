# The agentcg-nri plugin image, the same one `make images` writes without a
# daemon (build/images/agentcg-nri.tar): a static agentcg-nri at /agentcg-nri,
# an empty /etc/agentcg for the config, nothing else. For users with a Docker
# engine; build from the repository root:
#   docker build -t agentcg/agentcg-nri:dev --build-arg VERSION=$(git describe --tags --always) .
# It runs as root on purpose: loading the policy needs CAP_BPF and
# CAP_PERFMON, and a non-root process keeps no capabilities across exec in
# Kubernetes. deploy/helm/agentcg runs it privileged, for the host's cgroup
# namespace (its README says why).
# (This project's machines have no Docker engine, so this file is not built
# by its CI; replayimage/image is the tested path.)
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/agentcg/agentcg/internal/version.Version=${VERSION}" \
      -o /rootfs/agentcg-nri ./plugin/cmd/agentcg-nri \
 && mkdir -p /rootfs/etc/agentcg /rootfs/tmp && chmod 1777 /rootfs/tmp

FROM scratch
ARG VERSION=dev
COPY --from=build /rootfs/ /
ENV PATH=/
WORKDIR /
LABEL org.opencontainers.image.title="agentcg-nri" \
      org.opencontainers.image.description="agentcg NRI plugin: memcg BPF priority policy for annotated containers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/agentcg-nri"]
CMD ["--config", "/etc/agentcg/config.yaml"]
