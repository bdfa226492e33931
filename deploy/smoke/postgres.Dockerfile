# Stand-in for postgres:15: Debian bookworm's PostgreSQL 15 with an entry point that honours the official
# image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and keeps its data in /var/lib/postgresql/data.
ARG BASE=streamml-smoke/debian:bookworm
FROM ${BASE}
LABEL org.streamml.smoke="stand-in"
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
