#!/bin/sh
# Example runbook step: restart the service named by the alert. This demo only
# prints what a real runbook would run.
set -eu
service="${HEAL_PARAM_SERVICE:?the rule passes the service label as HEAL_PARAM_SERVICE}"
echo "would run: systemctl restart -- $service"
echo "alert details are in $HEAL_ALERT_JSON"
