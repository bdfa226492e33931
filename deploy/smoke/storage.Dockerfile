# Stand-in for the S3-compatible artifact store (RustFS has no Debian package): moto's S3 server on port
# 9000, answering /health as RustFS does, with curl for compose's healthcheck. It accepts any
# credentials, so the RUSTFS_*_FILE settings are ignored; bucket creation and MLflow's artifact reads and
# writes go through the same S3 API.
ARG PYTHON=streamml-smoke/python:3.11
FROM ${PYTHON}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/moto && /opt/moto/bin/pip install --no-cache-dir "moto[server]==5.2.5"
COPY storage-server.py /opt/moto/storage-server.py
EXPOSE 9000
CMD ["/opt/moto/bin/python", "/opt/moto/storage-server.py"]
