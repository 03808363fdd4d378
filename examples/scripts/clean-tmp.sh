#!/bin/sh
# Example runbook step: clean a scratch directory under the mount named by the
# alert. Alert data arrives only as environment variables (HEAL_*), never on
# the command line, so a hostile label cannot inject a command here.
set -eu
mount="${HEAL_PARAM_MOUNT:-/tmp}"
scratch="$mount/heal-demo-scratch"
echo "event $HEAL_EVENT_ID: $HEAL_ALERT_NAME on ${HEAL_LABEL_INSTANCE:-?}, cleaning $scratch"
mkdir -p "$scratch"
removed=$(find "$scratch" -type f -mtime +1 -print -delete | wc -l)
echo "removed $removed files older than a day"
df -h "$mount" | tail -n 1
