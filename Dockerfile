# One image for the worker, the HTTP API and the codec server:
#   docker build -t campaign-engine .
#   docker run --env-file .env campaign-engine worker
#   docker run --env-file .env -p 8000:8000 campaign-engine api --host 0.0.0.0
# It carries no Temporal dev server (the `dev-server` extra): point TEMPORAL_ADDRESS at a
# real cluster (docker-compose.temporal.yml runs one). Runs as an unprivileged user.

# --- build: the project as a wheel, installed with its dependencies into a venv ---------
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md worker_main.py ./
COPY campaign_core ./campaign_core
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
RUN python -m venv /opt/campaign \
 && /opt/campaign/bin/pip install --upgrade pip \
 && /opt/campaign/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/campaign/bin/pip install /wheels/*.whl

# --- run: the venv only, no compiler, no sources, no root --------------------------------
FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/campaign/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CAMPAIGN_HOME=/var/lib/campaign
RUN groupadd --system --gid 10001 campaign \
 && useradd --system --uid 10001 --gid campaign --home-dir /var/lib/campaign campaign \
 && install -d -m 0700 -o campaign -g campaign /var/lib/campaign
COPY --from=build /opt/campaign /opt/campaign
USER campaign
WORKDIR /var/lib/campaign
# API 8000, metrics 9464, codec server 8081.
EXPOSE 8000 9464 8081
ENTRYPOINT ["campaign"]
CMD ["worker"]
