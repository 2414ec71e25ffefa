# Build: docker build -t loggate .
# Run:   README.md "Running in a container" (advertised address, certificates, volumes).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p loggate

FROM debian:bookworm-slim
# A numeric user, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 loggate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin loggate \
 && mkdir -p /data /etc/loggate/tls \
 && chown 10001:10001 /data
COPY --from=build /src/target/release/loggate /usr/local/bin/loggate
# loggate.toml: no access key, mounted certificates; demo.toml: the demo key (opt in).
COPY docker/loggate.toml docker/demo.toml /etc/loggate/
ENV LOGGATE_CONFIG=/etc/loggate/loggate.toml \
    LOGGATE_DATA_DIR=/data
USER 10001:10001
VOLUME ["/etc/loggate", "/data"]
# Kafka (SASL_SSL) and the metrics/health endpoint.
EXPOSE 10012 9644
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["loggate", "health"]
# SIGTERM: stop accepting, answer what was read, flush, exit 0 (within shutdown_timeout_secs).
STOPSIGNAL SIGTERM
ENTRYPOINT ["loggate"]
CMD ["serve"]
