#!/bin/sh
# Make a throw-away CA and a server certificate for 127.0.0.1/localhost, for testing the TLS listener.
#   mosquitto/make-test-ca.sh DIR [HOSTNAME]
set -eu
dir=${1:?usage: make-test-ca.sh DIR [HOSTNAME]}
host=${2:-localhost}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=wattbus test CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$host" > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile san.ext -out server.crt 2>/dev/null
rm -f server.csr san.ext
echo "CA: $dir/ca.crt  server: $dir/server.crt $dir/server.key"
