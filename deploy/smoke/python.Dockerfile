# Stand-in for python:3.11-slim where Docker Hub cannot be reached: Debian bookworm's Python 3.11.
ARG BASE=streamml-smoke/debian:bookworm
FROM ${BASE}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
# The base image carries the build host's CA bundle (its network may inspect TLS); pip reads it from here.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
