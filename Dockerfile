# cedar-pdp: the decision server with the default bundle.
#   docker build -t cedar-pdp .
#   docker run -p 50051:50051 cedar-pdp            (serves /app/policies)
#   docker run -p 50051:50051 -v $PWD/bundles:/bundles cedar-pdp --bundles-dir /bundles
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 pdp
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY policies ./policies
USER pdp
ENV PDP_LISTEN=0.0.0.0:50051 \
    PDP_BUNDLES='{"default": "/app/policies"}' \
    PDP_DRAIN_SECONDS=5
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["pdp", "serve"]
