# Stand-in for redis:7.2: Debian bookworm's redis-server (7.0), data in /data like the official image.
ARG BASE=streamml-smoke/debian:bookworm
FROM ${BASE}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
