# A swarm worker node for the multi-node tests: Docker-in-Docker on the project's
# own Debian base (container/build.sh makes debian:bookworm-slim with debootstrap
# when no registry answers). Run with --privileged; /var/lib/docker is a volume.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io iptables ca-certificates procps iproute2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY node-entry.sh /usr/local/bin/node-entry.sh
COPY seccomp-chromium.json /etc/docker/seccomp-chromium.json
ENTRYPOINT ["/usr/local/bin/node-entry.sh"]
