#!/bin/bash
# Creates the demo's SoftHSM2 token and its two keys the first time a
# replica starts, and changes nothing when they exist. It takes the same
# steps as softhsm/dev-token.sh, but the token label comes from
# hallmark.toml and the user PIN from the hallmark-pin Secret, which the
# sidecar reads too. Demo only: a real HSM's token and keys are created with
# the vendor's tools and `hallmark keys create`, once, by an operator.
set -euo pipefail

config=/etc/hallmark/hallmark.toml
label=hallmark-demo            # hsm.token_label in hallmark.toml
tokendir=/var/lib/softhsm/tokens   # directories.tokendir in softhsm2.conf

mkdir -p "$tokendir"
if softhsm2-util --show-slots | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*$"; then
  echo "softhsm-token: token $label exists"
else
  # The demo never uses the security officer PIN, so it is random and
  # discarded. Without a terminal, softhsm2-util takes PINs only as
  # arguments, so they show in this container's process list while it runs.
  so_pin=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$so_pin" --pin "$(cat "$HALLMARK_PIN_FILE")"
fi

versions=$(hallmark keys list --config "$config" --json)
for key in default audit; do
  if grep -F "\"key_name\":\"$key\"" <<<"$versions" | grep -Fq '"state":"active"'; then
    echo "softhsm-token: key $key has an active version"
  else
    hallmark keys create --config "$config" --name "$key"
  fi
done
hallmark keys list --config "$config"
