#!/bin/sh
# First start: create the cluster (UTF-8, as the official image does: with SQL_ASCII psycopg returns bytes
# and MLflow cannot start), the user with its password and the database; then run the server. The password
# from POSTGRES_PASSWORD_FILE (a Compose secret) or POSTGRES_PASSWORD, as the official image reads them.
set -eu
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
mkdir -p "$PGDATA" /var/run/postgresql && chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pwfile && chown postgres /tmp/pwfile
  su postgres -s /bin/sh -c "initdb -D '$PGDATA' -U '$POSTGRES_USER' --pwfile=/tmp/pwfile --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256"
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -s /bin/sh -c "postgres -D '$PGDATA' -c listen_addresses='' -k /var/run/postgresql" &
  until su postgres -s /bin/sh -c "pg_isready -h /var/run/postgresql -q"; do sleep 0.5; done
  su postgres -s /bin/sh -c "createdb -h /var/run/postgresql -U '$POSTGRES_USER' '$POSTGRES_DB'" || true
  su postgres -s /bin/sh -c "pg_ctl -D '$PGDATA' -m fast -w stop"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql
