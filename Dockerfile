# Spool as an image: the static spool binary on scratch, as a non-root user, with its data in the
# /data volume. The binary is built on the host first (no Go image, and so no registry, is needed):
# scripts/docker-image does both steps, or by hand, from the repository's root:
#
#   CGO_ENABLED=0 go build -trimpath -o build/docker/spool ./cmd/spool
#   cp /etc/ssl/certs/ca-certificates.crt build/docker/ && mkdir -p build/docker/data
#   docker build -t spool .
#
# Run it: docker run -p 8080:8080 -v spool-data:/data -e SPOOL_ADMIN_KEY=... spool
FROM scratch
# Webhooks, S3 and PostgreSQL over TLS check certificates against these.
COPY build/docker/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY build/docker/spool /spool
COPY --chown=65532:65532 build/docker/data /data
USER 65532:65532
ENV SPOOL_ADDR=0.0.0.0:8080 SPOOL_DATA=/data HOME=/data TMPDIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/spool", "healthcheck"]
ENTRYPOINT ["/spool"]
CMD ["serve"]
