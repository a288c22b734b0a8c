# The sidecar alone; handler services run in their own containers and are registered by URI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
# Both distributions from this tree in one command (the sidecar pins the SDK at its own version),
# with the OTLP exporter: setting OTEL_EXPORTER_OTLP_ENDPOINT on the container turns tracing on.
RUN pip install ./sdk '.[otlp]' \
    && useradd --system --uid 10001 sidecar \
    && mkdir /data && chown sidecar /data

USER sidecar
# The LMDB store: keep it on a volume, or a restarted container forgets every invocation.
VOLUME /data
EXPOSE 8080 9070
ENTRYPOINT ["sidecar", "serve", "--data-dir", "/data", "--ingress", "0.0.0.0:8080", "--admin", "0.0.0.0:9070"]
