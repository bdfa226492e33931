# Stand-in for the S3-compatible artifact store (RustFS has no Debian package): moto's S3 server on port
# 9000. It accepts any credentials, so RUSTFS_* settings are ignored; bucket creation and MLflow's
# artifact reads and writes go through the same S3 API.
ARG PYTHON=streamml-smoke/python:3.11
FROM ${PYTHON}
LABEL org.streamml.smoke="stand-in"
RUN python -m venv /opt/moto && /opt/moto/bin/pip install --no-cache-dir "moto[server]==5.2.5"
EXPOSE 9000
CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "9000"]
