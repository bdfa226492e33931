# Stand-in for redis:7.2: Debian bookworm's redis-server (7.0), data in /data owned by the user redis like
# the official image (compose runs it as that user).
ARG BASE=streamml-smoke/debian:bookworm
FROM ${BASE}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
