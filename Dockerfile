# Serving image, CPU: no torch, non-root, healthcheck on the standard gRPC health service.
# The GPU image is Dockerfile.gpu (its own base, with that base's Python in both stages).
# Both stages use the same base: the virtualenv's interpreter link (/opt/venv/bin/python ->
# /usr/local/bin/python) points at a Python the runtime stage has.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY serving ./serving
COPY vision ./vision
COPY app ./app
COPY line ./line
COPY dicom_node ./dicom_node
COPY review ./review
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[cpu,dicom]"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2
RUN groupadd --system --gid 10001 vision \
    && useradd --system --uid 10001 --gid vision --home-dir /srv vision
COPY --from=build /opt/venv /opt/venv
COPY --chown=vision:vision models /srv/models
USER 10001:10001
WORKDIR /srv
EXPOSE 8000 8001
# Plaintext unless VISION_PROBE_TLS_CA (and, for mutual TLS, VISION_PROBE_TLS_CERT / _KEY) name
# the files: set them beside --tls-cert (docs/security.md, "Health probes under TLS").
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
  CMD ["python", "-m", "serving.health_probe"]
# The server listens on loopback unless told: in a container it must be 0.0.0.0.
ENTRYPOINT ["vision", "serve", "--models", "/srv/models", "--host", "0.0.0.0"]
