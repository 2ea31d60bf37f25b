#!/bin/sh
# Writes the API token where prometheus.yml reads it (never into the config), then starts Prometheus.
set -eu
umask 077
printf '%s' "${FLASHMM_API_TOKEN:?}" > /prometheus/token
exec /bin/prometheus "$@"
