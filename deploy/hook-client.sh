#!/usr/bin/env bash
# rollbot's deploy hook, for any CI: tell rollbot about a deploy, or ask whether a version may go out.
#
#   hook-client.sh deploy  URL ENV VERSION PREVIOUS STAGE [COMMIT] [ACTOR] [RUN_URL]
#   hook-client.sh allowed URL ENV VERSION
#
# URL is rollbot's base URL (https://rollbot.example.com); the secret comes from the environment
# variable ROLLBOT_WEBHOOK_SECRET, never from an argument. STAGE is deployed, migration_failed or
# start_failed. Requests are signed like Slack signs rollbot's (see bot/autorollback/contract.py):
#   X-Rollbot-Timestamp: <unix seconds>
#   X-Rollbot-Signature: v0=<hex HMAC-SHA256(secret, "v0:<timestamp>:<body>")>
#
# Exit status: 0 accepted / allowed, 1 the version is quarantined (allowed only; who and why are
# printed), 2 anything else (bad arguments, no secret, rollbot unreachable, refused, HTTP error).
#
# Needs bash (3.2 is enough), curl, openssl, date, sed, mktemp; uses jq when present.

set -euo pipefail
set -o errtrace
# Any unexpected failure is "other error" (2), never mistaken for "quarantined" (1).
trap 'echo "hook-client: unexpected failure (line $LINENO); nothing more was sent" >&2; exit 2' ERR
# Byte-wise, locale-independent character classes in the checks below.
export LC_ALL=C

readonly VERSION_RE='^v(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(-[0-9A-Za-z]{1,20}(\.[0-9A-Za-z]{1,20}){0,4})?$'
readonly ENV_RE='^[A-Za-z0-9_-]{1,64}$'
readonly COMMIT_RE='^([0-9a-fA-F]{7,40})?$'
readonly URL_RE='^https?://[^[:space:][:cntrl:]]+$'

die() { echo "hook-client: $*" >&2; exit 2; }

usage() {
  printf '%s\n' >&2 \
    'usage: hook-client.sh deploy  URL ENV VERSION PREVIOUS STAGE [COMMIT] [ACTOR] [RUN_URL]' \
    '       hook-client.sh allowed URL ENV VERSION' \
    'STAGE: deployed | migration_failed | start_failed. Secret: $ROLLBOT_WEBHOOK_SECRET.' \
    'Exit: 0 ok/allowed, 1 quarantined, 2 any other error.'
  exit 2
}

check() {  # check NAME VALUE REGEX WHAT
  [[ $2 =~ $3 ]] || die "$1 '$2' is not $4; nothing was sent."
}

has_control() { [[ $1 == *[[:cntrl:]]* ]]; }

json_string() {  # a JSON string literal for a value already free of control characters
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

printable() {  # text from rollbot, made safe for a terminal/log: no control characters, bounded
  local text=${1//[[:cntrl:]]/ }
  printf '%s' "${text:0:500}"
}

json_field() {  # json_field FILE NAME: a top-level string field of rollbot's answer, best effort
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$2" '.[$k] // empty | tostring' "$1" 2>/dev/null || true
  else
    sed -n -E 's/.*"'"$2"'"[[:space:]]*:[[:space:]]*"(([^"\\]|\\.)*)".*/\1/p' "$1" \
      | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g' -e q || true
  fi
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case $command in
  deploy) [[ $# -ge 5 && $# -le 8 ]] || usage ;;
  allowed) [[ $# -eq 3 ]] || usage ;;
  *) usage ;;
esac

secret=${ROLLBOT_WEBHOOK_SECRET:-}
[[ -n $secret ]] || die "ROLLBOT_WEBHOOK_SECRET is not set; refusing to send an unsigned request."

base_url=${1%/}
environment=$2
version=$3
check URL "$base_url" "$URL_RE" "an http:// or https:// URL"
check environment "$environment" "$ENV_RE" "1 to 64 letters, digits, '_' or '-'"
check version "$version" "$VERSION_RE" "a release version like v1.2.3"

if [[ $command == deploy ]]; then
  previous=$4
  stage=$5
  commit=${6:-}
  actor=${7:-}
  run_url=${8:-}
  check "previous version" "$previous" "$VERSION_RE" "a release version like v1.2.2"
  case $stage in
    deployed | migration_failed | start_failed) ;;
    *) die "stage '$stage' is not deployed, migration_failed or start_failed; nothing was sent." ;;
  esac
  check commit "$commit" "$COMMIT_RE" "a commit id of 7 to 40 hex characters"
  # Free text: refuse control characters (rollbot does too); JSON-escape the rest.
  if has_control "$actor" || [[ ${#actor} -gt 100 ]]; then
    die "actor must be at most 100 bytes without control characters; nothing was sent."
  fi
  if [[ -n $run_url ]] && { [[ ! $run_url =~ $URL_RE ]] || [[ ${#run_url} -gt 500 ]]; }; then
    die "run URL must be an http(s) URL of at most 500 bytes without spaces; nothing was sent."
  fi
  path=/hooks/deploy
  if command -v jq >/dev/null 2>&1; then
    body=$(jq -cn --arg environment "$environment" --arg version "$version" \
      --arg previous_version "$previous" --arg stage "$stage" --arg commit "$commit" \
      --arg actor "$actor" --arg run_url "$run_url" \
      '{environment: $environment, version: $version, previous_version: $previous_version,
        stage: $stage, commit: $commit, actor: $actor, run_url: $run_url}')
  else
    # environment, versions, stage and commit passed the patterns above: no character needs escaping.
    body="{\"environment\":\"$environment\",\"version\":\"$version\""
    body+=",\"previous_version\":\"$previous\",\"stage\":\"$stage\",\"commit\":\"$commit\""
    body+=",\"actor\":$(json_string "$actor"),\"run_url\":$(json_string "$run_url")}"
  fi
  what="deploy event '$stage' for $version (previous $previous) in $environment"
else
  path=/hooks/deploy/allowed
  body="{\"environment\":\"$environment\",\"version\":\"$version\"}"
  what="deploy-allowed question for $version in $environment"
fi

timestamp=$(date +%s)
# The key is on openssl's command line (dgst has no other way to take it): fine on a CI runner
# that is not shared with other users; elsewhere, prefer a client that reads it from a file.
digest=$(printf '%s' "v0:$timestamp:$body" | openssl dgst -sha256 -hmac "$secret")
digest=${digest##* }
[[ $digest =~ ^[0-9a-f]{64}$ ]] || die "openssl did not produce an HMAC-SHA256; nothing was sent."

answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
if ! status=$(curl -sS --max-time 10 --proto '=http,https' -o "$answer" -w '%{http_code}' \
    -X POST -H 'Content-Type: application/json' \
    -H "X-Rollbot-Timestamp: $timestamp" -H "X-Rollbot-Signature: v0=$digest" \
    --data-binary "$body" "$base_url$path"); then
  die "could not reach rollbot at $base_url$path; the $what was not delivered."
fi

reply=$(printable "$(<"$answer")")
if [[ $command == allowed ]]; then
  case $status in
    200)
      echo "rollbot: $version may be deployed to $environment (HTTP 200)."
      exit 0 ;;
    409)
      by=$(printable "$(json_field "$answer" quarantined_by)")
      at=$(printable "$(json_field "$answer" at)")
      why=$(printable "$(json_field "$answer" reason)")
      echo "rollbot: $version is QUARANTINED in $environment and must not be deployed (HTTP 409)."
      echo "rollbot: rolled back by ${by:-unknown} at ${at:-unknown}: ${why:-no reason given}"
      exit 1 ;;
  esac
elif [[ $status == 2[0-9][0-9] ]]; then
  echo "rollbot: accepted the $what (HTTP $status)."
  exit 0
fi
echo "hook-client: rollbot answered HTTP $status to the $what: ${reply:-(empty body)}" >&2
exit 2
