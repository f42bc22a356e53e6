#!/usr/bin/env bash
# The benchmark's baseline: a plain curl-and-sleep token refresher, the way the original tool began
# ("a simple shell script to fetch new tokens from the API server"). `python -m bench` runs it
# beside the real refresher, against the same stand-in API server, and prints the ratios.
#
#   passive  token_file is a symlink to kubelet's token; every --shutdown_interval the loop wakes
#            and looks for TRIGGER_DIR/shutdown (exit) and TRIGGER_DIR/activate (go active).
#   active   after SIGTERM (trapped; the sleep runs in the background so the trap fires at once)
#            or the activate file: POST a TokenRequest with curl every --refresh_interval, cut the
#            token out of the JSON with sed, write it to a temp file and mv it over token_file.
#            A failed call is retried --max_attempts times, --sleep apart (no jitter, no backoff).
#   SIGTERM  while active, or the shutdown file at the next poll: exit 0.
#
# Durations are seconds (decimals allowed). It prints one plain line per event on stdout:
# `started passive`, `activated <reason>`, `refreshed`, `refresh_failed attempt=<n>`, `exiting`.
set -u
export LC_ALL=C

API_SERVER="" CACERT="" CREDENTIAL_FILE="" NAMESPACE="" SERVICE_ACCOUNT=""
AUDIENCE="sts.amazonaws.com" EXPIRATION_SECONDS=7200
DEFAULT_TOKEN_FILE="" TOKEN_FILE="" TRIGGER_DIR=""
REFRESH_INTERVAL=3600 SHUTDOWN_INTERVAL=60 SLEEP=20 MAX_ATTEMPTS=3

for arg in "$@"; do
  case $arg in
    --api_server=*) API_SERVER=${arg#*=} ;;
    --cacert=*) CACERT=${arg#*=} ;;
    --credential_file=*) CREDENTIAL_FILE=${arg#*=} ;;
    --namespace=*) NAMESPACE=${arg#*=} ;;
    --service_account=*) SERVICE_ACCOUNT=${arg#*=} ;;
    --token_audience=*) AUDIENCE=${arg#*=} ;;
    --expiration_seconds=*) EXPIRATION_SECONDS=${arg#*=} ;;
    --default_token_file=*) DEFAULT_TOKEN_FILE=${arg#*=} ;;
    --token_file=*) TOKEN_FILE=${arg#*=} ;;
    --trigger_dir=*) TRIGGER_DIR=${arg#*=} ;;
    --refresh_interval=*) REFRESH_INTERVAL=${arg#*=} ;;
    --shutdown_interval=*) SHUTDOWN_INTERVAL=${arg#*=} ;;
    --sleep=*) SLEEP=${arg#*=} ;;
    --max_attempts=*) MAX_ATTEMPTS=${arg#*=} ;;
    *) echo "baseline.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
for name in API_SERVER CACERT CREDENTIAL_FILE NAMESPACE SERVICE_ACCOUNT DEFAULT_TOKEN_FILE \
    TOKEN_FILE; do
  if [[ -z ${!name} ]]; then
    echo "baseline.sh: --$(tr '[:upper:]' '[:lower:]' <<<"$name") is required" >&2
    exit 2
  fi
done
TOKEN_DIR=$(dirname "$TOKEN_FILE")
TRIGGER_DIR=${TRIGGER_DIR:-$TOKEN_DIR}
URL="$API_SERVER/api/v1/namespaces/$NAMESPACE/serviceaccounts/$SERVICE_ACCOUNT/token"
BODY="{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"audiences\":[\"$AUDIENCE\"],\"expirationSeconds\":$EXPIRATION_SECONDS}}"

# Microseconds from "seconds[.fraction]" (into the variable named $1), and back.
to_us() {
  local whole=${2%%.*} frac=""
  [[ $2 == *.* ]] && frac=${2#*.}
  frac="${frac}000000"
  printf -v "$1" '%d' $((10#${whole:-0} * 1000000 + 10#${frac:0:6}))
}
to_seconds() { printf -v "$1" '%d.%06d' $(($2 / 1000000)) $(($2 % 1000000)); }
now_us() { local t=$EPOCHREALTIME; NOW=$((${t%.*} * 1000000 + 10#${t#*.})); }

to_us REFRESH_US "$REFRESH_INTERVAL"
to_us SHUTDOWN_US "$SHUTDOWN_INTERVAL"

active=0 reason="" stop=0 sleep_pid=""
on_term() {
  if ((active)); then stop=1; else active=1 reason=sigterm; fi
}
trap on_term TERM
trap 'stop=1' INT
trap '[[ -n $sleep_pid ]] && kill "$sleep_pid" 2>/dev/null' EXIT

refresh() {
  local attempt=1 credential response token tmp
  while :; do
    read -r credential <"$CREDENTIAL_FILE"
    if response=$(curl -sS --fail --max-time 10 --cacert "$CACERT" \
        -H "Authorization: Bearer $credential" -H "Content-Type: application/json" \
        -H "Accept: application/json" -X POST --data "$BODY" "$URL" 2>/dev/null); then
      token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' <<<"$response")
      if [[ -n $token ]]; then
        tmp=$(mktemp "$TOKEN_DIR/.token.XXXXXX") &&
          printf '%s' "$token" >"$tmp" && chmod 0644 "$tmp" && mv -fT "$tmp" "$TOKEN_FILE" &&
          { echo "refreshed"; return 0; }
      fi
    fi
    echo "refresh_failed attempt=$attempt"
    ((attempt >= MAX_ATTEMPTS)) && return 1
    attempt=$((attempt + 1))
    sleep "$SLEEP"
  done
}

mkdir -p "$TOKEN_DIR" "$TRIGGER_DIR"
ln -sfn "$DEFAULT_TOKEN_FILE" "$TOKEN_FILE"
echo "started passive"
next_refresh=0
while :; do
  if ((stop)); then echo "exiting sigterm"; exit 0; fi
  if [[ -f $TRIGGER_DIR/shutdown ]]; then
    rm -f "$TRIGGER_DIR/shutdown"
    echo "exiting shutdown_file"
    exit 0
  fi
  if ((!active)) && [[ -f $TRIGGER_DIR/activate ]]; then active=1 reason=activate_file; fi
  wait_us=$SHUTDOWN_US
  if ((active)); then
    if [[ -n $reason ]]; then echo "activated $reason"; reason=""; fi
    now_us
    if ((NOW >= next_refresh)); then
      refresh
      now_us
      next_refresh=$((NOW + REFRESH_US))
    fi
    ((next_refresh - NOW < wait_us)) && wait_us=$((next_refresh - NOW))
    ((wait_us < 0)) && wait_us=0
  fi
  to_seconds wait_s "$wait_us"
  sleep "$wait_s" &
  sleep_pid=$!
  wait "$sleep_pid" || kill "$sleep_pid" 2>/dev/null  # a trapped SIGTERM ends the wait at once
  sleep_pid=""
done
