# Build: docker build -t loggate .
# Run:   docker run -p 10012:10012 -v loggate-data:/data loggate
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p loggate

FROM debian:bookworm-slim
RUN useradd --system --home /data loggate && mkdir -p /data /etc/loggate && chown loggate /data
COPY --from=build /src/target/release/loggate /usr/local/bin/loggate
COPY config/loggate.toml /etc/loggate/loggate.toml
# Listen on all interfaces inside the container; clients dial the advertised address.
RUN sed -i 's/^bind = "127.0.0.1:10012"/bind = "0.0.0.0:10012"/' /etc/loggate/loggate.toml
USER loggate
VOLUME /data
EXPOSE 10012
ENV LOGGATE_CONFIG=/etc/loggate/loggate.toml LOGGATE_DATA_DIR=/data
ENTRYPOINT ["loggate"]
CMD ["serve"]
