# syntax=docker/dockerfile:1
# One image, three binaries: checkout (the default command), migrator, backup.
#
#   docker build -t boutique-orders:0.1.0 .
#
# The dependency layer (cargo-chef) is rebuilt only when Cargo.toml or
# Cargo.lock change; the final image is distroless (glibc, CA certificates,
# no shell, no package manager) and runs as the unprivileged user 65532.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-trixie AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only the dependencies: cached until the manifests change.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      --package checkout --package migrator --package backup
COPY . .
RUN cargo build --release --locked --package checkout --package migrator --package backup \
 && mkdir -p /out \
 && cp target/release/checkout target/release/migrator target/release/backup /out/

FROM gcr.io/distroless/cc-debian13:nonroot
LABEL org.opencontainers.image.title="boutique-orders" \
      org.opencontainers.image.description="Online Boutique checkout that keeps every order in PostgreSQL, with its migrator and backup tool" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 5050
ENTRYPOINT ["/usr/local/bin/checkout"]
CMD ["serve"]
