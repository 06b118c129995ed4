#!/usr/bin/env bash
# Initialise a throwaway SoftHSM2 token in DIR and print the SOFTHSM2_CONF to use.
#   softhsm/make-token.sh DIR LABEL SO_PIN USER_PIN
# For tests and experiments only: the PINs are given on the command line.
set -euo pipefail
dir=$1 label=$2 so_pin=$3 user_pin=$4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/tokens"
tokendir=$(cd "$dir/tokens" && pwd)
sed "s|@TOKENDIR@|$tokendir|" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
    --so-pin "$so_pin" --pin "$user_pin" > /dev/null
echo "$dir/softhsm2.conf"
