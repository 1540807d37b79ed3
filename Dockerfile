# cedar-pdp: the decision server with the default bundle.
#
#   docker build -t cedar-pdp .
#   docker run --read-only --tmpfs /tmp -v pdp-data:/data -p 50051:50051 cedar-pdp
#   docker run --read-only --tmpfs /tmp -v pdp-data:/data -v $PWD/bundles:/bundles:ro \
#     -p 50051:50051 cedar-pdp --bundles-dir /bundles
#
# No container engine runs where this file was written: it has never been built there. It is
# kept small enough to check by reading, and service/tests/test_supply_chain.py checks what
# can be checked without building (pinned base, hashed installs, non-root, healthcheck).
#
# The root filesystem can be read-only: the only writable paths are the volumes below,
# /data (`data_dir`: the highest bundle version per tenant with signed bundles, later the
# entity store) and /tmp (`--workers` keeps its shared metrics there). Point a decision log
# file (`--decision-log file`) at a volume too.

# python:3.11-slim (Debian trixie, Python 3.11.15): the multi-platform index digest that
# docker-library/repo-info records for the tag (repos/python/remote/3.11-slim.md). Bump
# the tag and the digest together, from that record or `docker buildx imagetools inspect`.
ARG BASE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Every dependency from the lock, each file checked against its hash, wheels only (nothing
# is compiled here); the project itself is built with the locked build backend and
# installed without dependencies, so nothing unlocked gets in.
COPY requirements.lock requirements-build.lock /tmp/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements-build.lock \
 && python -m venv /opt/pdp \
 && /opt/pdp/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/pdp/bin/pip install --no-deps /wheels/*.whl \
 && /opt/pdp/bin/pip check \
 && /opt/pdp/bin/pip uninstall --yes pip

FROM ${BASE}
# The venv's python is a link to the base image's, the same file in both stages.
COPY --from=build /opt/pdp /opt/pdp
COPY policies /app/policies
RUN groupadd --system --gid 10001 pdp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin pdp \
 && mkdir -p /data && chown 10001:10001 /data
VOLUME ["/data", "/tmp"]
WORKDIR /app
# A container must listen beyond its own loopback, so plaintext is allowed here explicitly
# (the server refuses it off loopback otherwise). For TLS, mount a certificate and key and
# set PDP_TLS_CERT_FILE / PDP_TLS_KEY_FILE (and PDP_ALLOW_PLAINTEXT=false); `pdp health`
# speaks plaintext, so with TLS on replace the HEALTHCHECK below.
ENV PATH=/opt/pdp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PDP_LISTEN=0.0.0.0:50051 \
    PDP_ALLOW_PLAINTEXT=true \
    PDP_BUNDLES='{"default": "/app/policies"}' \
    PDP_DATA_DIR=/data \
    PDP_DRAIN_SECONDS=5
USER 10001:10001
EXPOSE 50051
# Readiness over the standard gRPC health service: unhealthy while no tenant can decide
# (before the first bundle, every tenant stale under max_bundle_age, draining).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["pdp", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pdp", "serve"]
