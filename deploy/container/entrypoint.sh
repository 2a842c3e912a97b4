#!/bin/sh
# The image's entrypoint: the first argument names the role.
#   gateway    the HTTP API (DATAZONE_HOST:DATAZONE_PORT); run as many replicas as you like
#   scheduler  ingestion schedules and audit sealing; one per zone
#   worker     PSI jobs and tables, anonymous-query tables, scoring jobs; the engine link's ports
#   migrate    apply the database migrations and exit (replicas also migrate at start-up, under a lock)
# anything else is passed to the `datazone` command (e.g. `principal create ops --role curator`).
set -eu
if [ -z "${DATAZONE_DATABASE_URL:-}" ]; then
  echo "datazone: set DATAZONE_DATABASE_URL (postgresql://user:password@host:5432/db)" >&2
  exit 64
fi
role="${1:-gateway}"
[ "$#" -gt 0 ] && shift
case "$role" in
  gateway)   exec datazone serve --host "${DATAZONE_HOST:-0.0.0.0}" --port "${DATAZONE_PORT:-8000}" "$@" ;;
  scheduler) exec datazone scheduler "$@" ;;
  worker)    exec datazone worker "$@" ;;
  migrate)   exec datazone migrate "$@" ;;
  *)         exec datazone "$role" "$@" ;;
esac
