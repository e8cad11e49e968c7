#!/bin/sh
# Add (or change) a broker user. The password goes to a file readable by that process only, never argv.
#   mosquitto/make-user.sh NAME [PASSWD_FILE] [SECRETS_DIR]
set -eu
name=${1:?usage: make-user.sh NAME [PASSWD_FILE] [SECRETS_DIR]}
passwd_file=${2:-/etc/wattbus/mosquitto/passwd}
secrets=${3:-/etc/wattbus}
umask 077
mkdir -p "$(dirname "$passwd_file")" "$secrets"
pass=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$pass" > "$secrets/$name.pass"
[ -f "$passwd_file" ] || : > "$passwd_file"
mosquitto_passwd -b "$passwd_file" "$name" "$pass" 2>/dev/null || {
    # mosquitto_passwd reads the password from stdin when -b is not wanted
    printf '%s\n%s\n' "$pass" "$pass" | mosquitto_passwd "$passwd_file" "$name"
}
echo "user $name: password in $secrets/$name.pass (set mqtt.password_file to it)"
