# Builds the yuntiao binary and ships it on a slim Debian base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p yuntiao-server --bin yuntiao

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/yuntiao yuntiao \
    && mkdir -p /var/lib/yuntiao && chown yuntiao /var/lib/yuntiao
COPY --from=build /src/target/release/yuntiao /usr/local/bin/yuntiao
USER yuntiao
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/yuntiao"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
