# Slim serving image: no torch, non-root, healthcheck on the standard gRPC health service.
# GPU variant: docker build --build-arg RUNTIME_EXTRA=gpu --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
ARG BASE=python:3.11-slim-bookworm

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ARG RUNTIME_EXTRA=cpu
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY serving ./serving
COPY vision ./vision
COPY app ./app
COPY line ./line
COPY dicom_node ./dicom_node
COPY review ./review
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[${RUNTIME_EXTRA},dicom]"

FROM ${BASE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 vision \
    && useradd --system --uid 10001 --gid vision --home-dir /srv vision
COPY --from=build /opt/venv /opt/venv
COPY --chown=vision:vision models /srv/models
USER 10001:10001
WORKDIR /srv
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import grpc,sys;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;c=grpc.insecure_channel('127.0.0.1:8001');r=g.HealthStub(c).Check(h.HealthCheckRequest(),timeout=4);sys.exit(r.status!=1)"]
# The server listens on loopback unless told: in a container it must be 0.0.0.0.
ENTRYPOINT ["vision", "serve", "--models", "/srv/models", "--host", "0.0.0.0"]
