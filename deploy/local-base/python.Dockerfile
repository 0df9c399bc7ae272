# Stand-in for python:3.11-slim-bookworm where no registry is reachable: Debian's Python 3.11 on
# a debootstrapped bookworm (scripts/build-local-base-images.sh).
FROM kotomi-local/debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3-venv ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
