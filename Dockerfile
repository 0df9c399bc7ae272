# One image for the Dagster services of docker-compose.yml (code server, webserver, daemon) and
# for runs launched in containers of their own (deploy/docker-runs/).
#   docker build -t kotomi-backup-dagster .
# Build arguments:
#   PYTHON_IMAGE     a Debian bookworm image with Python 3.11 (python3 -m venv); the default is
#                    the official one, scripts/build-local-base-images.sh builds one from Debian
#   EXTRA_CA_CERTS   PEM certificates pip must trust besides its own bundle (a TLS-inspecting
#                    proxy); used in the build stage only, never in the final image
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY deploy/constraints.txt pyproject.toml README.md ./
COPY kotomi_backup_dagster ./kotomi_backup_dagster
# The pinned set (deploy/constraints.txt, scripts/lock-image-deps.sh), as wheels only: nothing is
# compiled, so no compiler is needed here or ends up below. Then pip and setuptools go: the
# final image installs nothing at run time.
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /tmp/extra-ca.pem; \
        cat "$(/opt/venv/bin/python -m pip._vendor.certifi)" /tmp/extra-ca.pem > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    export PIP_CONSTRAINT=/src/constraints.txt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1; \
    /opt/venv/bin/pip install -q --only-binary=:all: -r constraints.txt; \
    /opt/venv/bin/pip install -q --no-deps .; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip uninstall -q -y pip setuptools

FROM ${PYTHON_IMAGE}
# sqlite3 for `kotomi-backup recover`, zstd and age to restore by hand without this tool.
RUN apt-get update \
    && apt-get install -y --no-install-recommends sqlite3 zstd age \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
# Kotomi's image runs as uid/gid 1000 and owns the data volume: so do we, so that restored
# files keep Kotomi's owner and the WAL's -shm stays writable.
RUN groupadd -g 1000 kotomi \
    && useradd -u 1000 -g 1000 -M -d /opt/dagster/home -s /usr/sbin/nologin kotomi
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home
# Two Dagster instances: runs in the code server (default) or each in its own container
# (DAGSTER_HOME=/opt/dagster/home-docker-runs, set by deploy/docker-runs/compose.yml).
COPY deploy/dagster.yaml deploy/workspace.yaml /opt/dagster/home/
COPY deploy/docker-runs/dagster.yaml deploy/workspace.yaml /opt/dagster/home-docker-runs/
COPY deploy/healthcheck.py /opt/dagster/healthcheck.py
# Owned by uid 1000 here, so that a new volume mounted on them is too.
# /opt/dagster/keeper: the keeper service's own instance (docker-compose.yml, profile keeper).
RUN mkdir -p /staging /backups /data /opt/dagster/storage /opt/dagster/keeper \
    && chown -R 1000:1000 /opt/dagster/home /opt/dagster/home-docker-runs /opt/dagster/storage \
       /opt/dagster/keeper /staging /backups
USER 1000:1000
WORKDIR /opt/dagster/home
# The webserver answers /server_info, the code server Dagster's gRPC health check (each probe
# costs about 0.1 s of CPU); other processes (daemon, runs, the CLI) have no endpoint and count
# as healthy while they run.
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/opt/dagster/healthcheck.py"]
