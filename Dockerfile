# syntax=docker/dockerfile:1
# spendstream worker image: `spendstream worker` by default; `spendstream migrate`
# and the other subcommands run with the same image (docker-compose.yml).
# Build: docker build -t spendstream:0.1.0 .

# ---- build: install the distribution and its dependencies into a venv ----
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only in this stage, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md* : the readme is optional for the build (setuptools only warns).
COPY pyproject.toml README.md* ./
COPY streams ./streams
COPY detectors ./detectors
COPY schemas ./schemas
COPY sql ./sql
RUN pip install --upgrade pip setuptools wheel \
    && pip install . \
    && spendstream --help > /dev/null

# ---- runtime: the venv only, as an unprivileged user ----
FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="spendstream" \
      org.opencontainers.image.description="Real-time AI API spend attribution and anomaly alerting" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 spendstream \
    && useradd --system --uid 10001 --gid spendstream --home-dir /home/spendstream \
       --create-home --shell /usr/sbin/nologin spendstream

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SPENDSTREAM_WEB_HOST=0.0.0.0 \
    SPENDSTREAM_WEB_PORT=6066

WORKDIR /home/spendstream
USER 10001:10001

# The worker's web server: GET /health (200 when ok or degraded), GET /metrics.
EXPOSE 6066

HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SPENDSTREAM_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["spendstream"]
CMD ["worker"]
