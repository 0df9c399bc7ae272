# One image for the three Dagster services (user code, webserver, daemon).
FROM python:3.11-slim-bookworm

# sqlite3 for `kotomi-backup recover`, zstd/age to restore by hand without this tool.
RUN apt-get update \
    && apt-get install -y --no-install-recommends sqlite3 zstd age \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY kotomi_backup_dagster ./kotomi_backup_dagster
RUN pip install --no-cache-dir .

ENV DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p $DAGSTER_HOME /staging /backups
COPY deploy/dagster.yaml deploy/workspace.yaml $DAGSTER_HOME/
# Kotomi's image runs as uid/gid 1000 and owns the data volume: so do we, so that
# restored files keep Kotomi's owner and the WAL's -shm stays writable.
RUN groupadd -g 1000 kotomi && useradd -u 1000 -g 1000 -M kotomi \
    && chown -R 1000:1000 $DAGSTER_HOME /staging /backups
USER 1000:1000
