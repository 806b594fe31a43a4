# notion-gateway container image.
#
#   docker build -t notion-gateway .
#   docker run --rm -p 8787:8787 notion-gateway
#
# Configuration: NOTION_GATEWAY_* environment variables (NOTION_GATEWAY_LIMITS__RATE=...), or a
# file mounted at /etc/notion-gateway/notion-gateway.toml (the image ships the documented
# reference file there, every key commented out, so the embedded defaults apply).

# --- build -----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
# cargo reads every target the manifest declares before it builds anything, so the declared
# [[bench]] file comes along (benches/ holds only that; examples/ and tests/ are found by
# directory and may be absent). .ci/docker-context.py builds exactly what these lines copy.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin notion-gateway \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin notion-gateway

# --- run -------------------------------------------------------------------------------------
# glibc, no shell, no package manager; runs as uid 65532 ("nonroot"). TLS roots are compiled
# into the binary (webpki-roots), so no CA package is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/notion-gateway /usr/local/bin/notion-gateway
COPY config/notion-gateway.toml /etc/notion-gateway/notion-gateway.toml
ENV NOTION_GATEWAY_CONFIG=/etc/notion-gateway/notion-gateway.toml \
    NOTION_GATEWAY_SERVER__LISTEN=0.0.0.0:8787 \
    NOTION_GATEWAY_LOG__FORMAT=json
USER nonroot
EXPOSE 8787
# `docker stop` sends SIGTERM: the gateway stops accepting and drains in-flight requests for
# server.drain_timeout (30 s); give it that long (docker stop -t 35, compose stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/notion-gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/notion-gateway"]
CMD ["serve"]
