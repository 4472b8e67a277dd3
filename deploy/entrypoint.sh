#!/bin/sh
# Entry points of the image: the first argument names the process.
set -eu
case "${1:-}" in
  quote)   exec python -m quote_service ;;
  ramp)    exec python -m ramp_service ;;
  worker)  exec python -m ramp_service.worker ;;
  gateway) exec python -m gateway ;;
  migrate) exec python -m devstack migrate ;;
  cleanup) exec python -m cleanup_job ;;
  *) echo "usage: entrypoint quote|ramp|worker|gateway|migrate|cleanup" >&2; exit 64 ;;
esac
