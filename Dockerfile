# syntax=docker/dockerfile:1
#
# The nft-masq-agent image: one statically linked (musl) binary on an empty base, nothing else.
# No shell, no libc, no package manager, no files to write.
#
# Privileges: the process runs as UID/GID 65532 and gets CAP_NET_ADMIN from a file capability
# on the binary (cap_net_admin=ep). With `allowPrivilegeEscalation: false` (no_new_privs) the
# kernel still honours a file capability as long as it does not exceed the permitted set the
# process had before exec; containerd and CRI-O put the capabilities of
# `capabilities.add: [NET_ADMIN]` into that set for every UID, so the agent gets exactly
# CAP_NET_ADMIN and nothing else. Runtimes that empty that set for non-root users (Docker
# Engine, also through cri-dockerd) need the root variant: deploy/components/run-as-root.
# docs/operations.md ("Privileges") has the details and the way to check a node.
#
# The builder must keep extended attributes: the file capability is the binary's
# security.capability attribute, and it reaches the image only if COPY --from carries it into
# the layer (as a SCHILY.xattr record of the layer's tar).
#   - BuildKit (`docker build` on Docker 23+, `docker buildx build`): keeps it.
#   - buildah and podman: keep it (deploy/test-image builds with buildah and checks the layer).
#   - kaniko: drops it (GoogleContainerTools/kaniko#2866).
#   - Docker's legacy builder (Docker before 23, or DOCKER_BUILDKIT=0): dropped it
#     (moby/moby#38132).
# An image without it starts, but without CAP_NET_ADMIN: the agent exits at once with an error
# naming this cause. Build with a builder that keeps it, or deploy with
# deploy/components/run-as-root, which needs no file capability.
#
# Build from source (pulls the Rust image):
#   docker build -t nft-masq-agent:0.1.0 .
# Build around a binary built and setcap'd beforehand, pulling nothing (deploy/test-image):
#   buildah bud --build-arg BINARY_FROM=prebuilt -f Dockerfile DIR   # DIR/nft-masq-agent

ARG RUST_VERSION=1.95
# "build": compile in the build stage below; "prebuilt": take nft-masq-agent from the context.
ARG BINARY_FROM=build

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# setcap, to give the binary its file capability. Unpinned: any libcap2-bin does the job.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The musl target of the machine the stage runs on: a static binary for this architecture.
RUN target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && cargo build --release --locked --target "$target" --bin nft-masq-agent \
 && install -D -m 0755 "target/$target/release/nft-masq-agent" /out/nft-masq-agent \
 && setcap cap_net_admin=ep /out/nft-masq-agent \
 && getcap /out/nft-masq-agent | grep -q cap_net_admin

# The binary from the build context, already carrying its file capability
# (setcap cap_net_admin=ep nft-masq-agent). Nothing to pull.
FROM scratch AS prebuilt
COPY nft-masq-agent /out/nft-masq-agent

# hadolint ignore=DL3006
FROM ${BINARY_FROM} AS binary

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="nft-masq-agent" \
      org.opencontainers.image.description="Kubernetes node agent: ip-masq-agent-compatible masquerade policy committed as one atomic nftables netlink transaction" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"
# The file capability travels as the security.capability attribute of the file in the layer:
# see the builders above; check another builder's output with docs/operations.md ("Privileges").
COPY --from=binary /out/nft-masq-agent /nft-masq-agent
# Container logs are never a terminal: plain text, no colour codes.
ENV NO_COLOR=1
USER 65532:65532
# No arguments: the daemon, reading the ip-masq* files of /etc/config (the ConfigMap volume:
# ip-masq-agent's /etc/config/ip-masq-agent, or ip-masq-agent-v2's files). A DaemonSet's
# ip-masq-agent flags are accepted as they are.
ENTRYPOINT ["/nft-masq-agent"]
