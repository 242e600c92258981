# Test-stack helper image: tcpreplay + iproute2 (Debian packages), used by the `sensor` and
# `replayer` services of docker-compose.yml. Not part of the sidecar image.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends tcpreplay iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --chmod=0755 docker/replay.sh /usr/local/bin/bnn-replay
# Runs as root inside the container: creating the veth pair and writing raw frames needs
# NET_ADMIN + NET_RAW, which compose grants after dropping every other capability.
ENTRYPOINT ["/usr/local/bin/bnn-replay"]
