# Stand-in for prom/prometheus: Debian bookworm's Prometheus, laid out like the official image (the
# binary as the entry point, data in /prometheus, run as nobody), with wget for compose's healthcheck.
ARG BASE=streamml-smoke/debian:bookworm
FROM ${BASE}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
