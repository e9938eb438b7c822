# Builds the web client, then the yuntiao binary (which embeds the client), and ships the binary
# on a slim Debian base.
FROM node:20-bookworm AS web
WORKDIR /src/web-client
COPY web-client/package.json web-client/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY web-client/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /src/web-client/dist /src/web-client/dist
RUN cargo build --release --locked -p yuntiao-server --bin yuntiao

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/yuntiao yuntiao \
    && mkdir -p /var/lib/yuntiao && chown yuntiao /var/lib/yuntiao
COPY --from=build /src/target/release/yuntiao /usr/local/bin/yuntiao
USER yuntiao
# HTTP and websockets; media over UDP; ICE-TCP for clients whose network blocks UDP.
EXPOSE 8080 7882/udp 7881/tcp
ENTRYPOINT ["/usr/local/bin/yuntiao"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
