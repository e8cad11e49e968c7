#!/bin/sh
# Add a broker user, or give it a new password. The password is made here, written to SECRETS_DIR/NAME.pass
# (mode 0600) and fed to mosquitto_passwd on its standard input: it never appears on a command line, where
# `ps` would show it to every user of the machine.
#   mosquitto/make-user.sh [--keep] NAME [PASSWD_FILE] [SECRETS_DIR]
#   --keep   when SECRETS_DIR/NAME.pass exists, hash that password instead of making a new one
# Defaults: PASSWD_FILE /etc/wattbus/mosquitto/passwd, SECRETS_DIR /etc/wattbus/mqtt. deploy/install.sh uses
# this for every wattbus process; run it yourself for a device with its own broker user (a Shelly), then
# `systemctl reload mosquitto`.
set -eu
keep=0
if [ "${1:-}" = "--keep" ]; then keep=1; shift; fi
name=${1:?usage: make-user.sh [--keep] NAME [PASSWD_FILE] [SECRETS_DIR]}
passwd_file=${2:-/etc/wattbus/mosquitto/passwd}
secrets=${3:-/etc/wattbus/mqtt}
case "$name" in
*:* | *' '* | '') echo "make-user.sh: bad user name '$name'" >&2; exit 2 ;;
esac
command -v mosquitto_passwd >/dev/null 2>&1 || { echo "make-user.sh: mosquitto_passwd missing (apt-get install mosquitto)" >&2; exit 1; }
umask 077
mkdir -p "$secrets"
[ -f "$passwd_file" ] || { mkdir -p "$(dirname "$passwd_file")"; : > "$passwd_file"; }
secret="$secrets/$name.pass"
if [ "$keep" = 1 ] && [ -s "$secret" ]; then
    pass=$(head -n 1 "$secret")
else
    pass=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$pass" > "$secret.tmp"
    mv "$secret.tmp" "$secret"
fi
# printf is a shell builtin: the password goes through a pipe, not through any program's argv
printf '%s\n%s\n' "$pass" "$pass" | mosquitto_passwd "$passwd_file" "$name" >/dev/null
echo "broker user $name: password in $secret" >&2
