#!/bin/sh
# Install wattbus on Raspberry Pi OS / Debian as one systemd unit and one broker user per process.
#
#   sudo deploy/install.sh                 install, or bring an install up to date with wattbus.toml (again
#                                          and again: a second run changes nothing and keeps every password)
#   sudo deploy/install.sh --tls DIR       also serve MQTT over TLS on 8883 (DIR: ca.crt server.crt server.key)
#   sudo deploy/install.sh --rotate NAME   give process NAME a new broker password and restart it
#   sudo deploy/install.sh --uninstall     stop and remove units, venv and broker config; keep config,
#                                          passwords and data (--purge removes those and the user too)
#   sudo deploy/install.sh --no-start      write and enable everything, start and restart nothing
#   deploy/install.sh --root DIR ...       install into DIR instead of / (DESTDIR-style; the test suite)
#
# What it makes (paths under --root when given):
#   user and group `wattbus` (system user, no login)         the processes run as it
#   /opt/wattbus/.venv                                        wattbus and its Python dependencies
#   /etc/wattbus/wattbus.toml          root:wattbus 0640      from deploy/wattbus.example.toml, never overwritten
#   /etc/wattbus/mqtt/NAME.pass        root:root 0600         one password per process; systemd hands it to
#                                                             wattbus@NAME alone (LoadCredential=)
#   /etc/wattbus/mosquitto/            root:mosquitto 0750    mosquitto.conf, passwd (hashes), acl (from
#                                                             `wattbus acl`), certs/; 0640 files: Mosquitto
#                                                             reads them after dropping to user mosquitto
#   /etc/wattbus/mosquitto.d/          root:root 0755         wattbus.conf (delivery settings), tls.conf
#   /etc/systemd/system/wattbus@.service, wattbus@NAME.service.d/hardware.conf (adc: SPI; p1: serial)
#   /etc/systemd/system/mosquitto.service.d/wattbus.conf      Mosquitto runs wattbus's production config
#   wattbus@NAME enabled and started for every configured process; units of removed processes disabled
#
# --root DIR touches nothing outside DIR: apt-get, useradd/userdel and `systemctl start/stop/reload` are
# skipped; chown is replaced by a list of the owners it would set, DIR/.install-owners; units are enabled
# with `systemctl --root=DIR` (symlinks only). The venv, passwords, ACL and `systemd-analyze verify` are real.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
TLS_DIR=""
ROTATE=""
UNINSTALL=0
PURGE=0
NO_START=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
    --root) ROOT=$(cd "${2:?--root needs a directory}" && pwd); shift 2 ;;
    --tls) TLS_DIR=${2:?--tls needs a directory with ca.crt server.crt server.key}; shift 2 ;;
    --rotate) ROTATE=${2:?--rotate needs a process name}; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --no-start) NO_START=1; shift ;;
    -h | --help) usage 0 ;;
    *) say "unknown option $1"; usage ;;
    esac
done
[ "$ROOT" = / ] && ROOT=""

ETC=/etc/wattbus
SECRETS=$ETC/mqtt
BROKER=$ETC/mosquitto
BROKER_D=$ETC/mosquitto.d
VENV=/opt/wattbus/.venv
UNITS=/etc/systemd/system
CONF=$ETC/wattbus.toml
WANTS=$UNITS/multi-user.target.wants

umask 077  # every file starts private; own() then opens up exactly what each reader needs
r() { printf '%s%s' "$ROOT" "$1"; }          # a path inside the install root
OWNERS="$ROOT/.install-owners"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
on_host() { [ -z "$ROOT" ]; }
if on_host && [ "$(id -u)" != 0 ]; then die "run as root (sudo $0), or with --root DIR for a scratch install"; fi

# -- helpers that change things only when something differs (idempotent) --------------------------------
own() { # own USER:GROUP MODE PATH
    chmod "$2" "$(r "$3")"
    if on_host; then
        chown "$1" "$3"
    else # the stub for chown: the owners it would set, one "USER:GROUP MODE PATH" line per path
        line="$1 $2 $3"
        grep -qxF "$line" "$OWNERS" 2>/dev/null && return
        { grep -v " $3\$" "$OWNERS" 2>/dev/null || true; echo "$line"; } | sort -k3 > "$WORK/owners"
        cat "$WORK/owners" > "$OWNERS"
    fi
}

dir() { # dir USER:GROUP MODE PATH
    [ -d "$(r "$3")" ] || (umask 022 && mkdir -p "$(r "$3")")  # parents as usual (0755), then own()
    own "$1" "$2" "$3"
}

CHANGED=""
put() { # put SOURCE USER:GROUP MODE PATH: install a file when its content differs
    if ! cmp -s "$1" "$(r "$4")"; then
        cp "$1" "$(r "$4").tmp"
        mv "$(r "$4").tmp" "$(r "$4")"
        CHANGED="$CHANGED $4"
        say "wrote $4"
    fi
    own "$2" "$3" "$4"
}

changed() { case " $CHANGED " in *" $1 "*) return 0 ;; esac; return 1; }

unit_enable() { # unit_enable enable|disable UNIT: and start/stop it on this machine; offline in --root mode
    if on_host; then
        if [ "$NO_START" = 1 ]; then systemctl "$1" "$2"; else systemctl "$1" --now "$2"; fi
    elif command -v systemctl >/dev/null 2>&1; then
        systemctl --root="$ROOT" "$1" "$2" >/dev/null 2>&1
    elif [ "$1" = enable ]; then
        mkdir -p "$(r "$WANTS")" && ln -sf "$UNITS/wattbus@.service" "$(r "$WANTS/$2")"
    else
        rm -f "$(r "$WANTS/$2")"
    fi
}

wattbus() { "$(r "$VENV/bin/wattbus")" -c "$(r "$CONF")" "$@"; }

PROCESSES="$WORK/processes"   # `wattbus acl --processes`: name kind type user hardware, one line each
configured_processes() { wattbus acl --processes > "$PROCESSES"; }

enabled_processes() {
    for link in "$(r "$WANTS")"/wattbus@*.service; do
        [ -e "$link" ] || [ -L "$link" ] || continue
        name=${link##*/wattbus@}
        printf '%s\n' "${name%.service}"
    done
}

# -- steps ---------------------------------------------------------------------------------------------
packages() {
    if ! on_host; then say "(--root) skipped: apt-get install mosquitto python3-venv"; return; fi
    missing=""
    for pkg in mosquitto python3-venv; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        say "installing Debian packages:$missing"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
}

system_user() {
    if ! on_host; then say "(--root) skipped: useradd --system wattbus"; return; fi
    if ! getent passwd wattbus >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/wattbus --no-create-home --shell /usr/sbin/nologin \
            --comment "wattbus energy monitoring" wattbus
        say "created system user wattbus"
    fi
}

source_hash() {
    (cd "$SRC" && find pyproject.toml bus wattbus producers consumers schemas -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64)
}

pi_extras() { # "[pi]" (spidev, gpiozero) when a process reads SPI
    if [ -f "$PROCESSES" ] && awk -F'\t' '$5 == "spi"' "$PROCESSES" | grep -q .; then echo "[pi]"; fi
}

venv() {
    py=$(r "$VENV/bin/python")
    stamp=$(r "$VENV/.wattbus-source")
    hash=$(source_hash)
    [ ! -x "$(r "$VENV/bin/wattbus")" ] || configured_processes 2>/dev/null || rm -f "$PROCESSES"
    if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash $(pi_extras)" ]; then
        return
    fi
    umask 022  # the venv is code every unit runs: world-readable, root-owned
    if [ ! -x "$py" ]; then
        mkdir -p "$(r /opt/wattbus)"
        python3 -m venv "$(r "$VENV")"
        say "created $VENV"
    fi
    say "installing wattbus from $SRC into $VENV"
    # from a clean copy: pip builds in the source tree, and a stale build/ there could bring back deleted files
    stage="$WORK/src"
    rm -rf "$stage" && mkdir "$stage"
    (cd "$SRC" && tar cf - --exclude=__pycache__ pyproject.toml README.md bus wattbus producers consumers schemas) |
        (cd "$stage" && tar xf -)
    "$py" -m pip install -q --disable-pip-version-check "$stage" >&2
    configured_processes 2>/dev/null || rm -f "$PROCESSES"
    extras=$(pi_extras)
    [ -z "$extras" ] || "$py" -m pip install -q --disable-pip-version-check "$stage$extras" >&2
    cp "$SRC/README.md" "$(r /opt/wattbus/README.md)"
    umask 077
    printf '%s\n' "$hash $extras" > "$stamp"
    CHANGED="$CHANGED $VENV"
}

config() {
    dir root:root 0755 $ETC
    if [ ! -f "$(r "$CONF")" ]; then
        cp "$SRC/deploy/wattbus.example.toml" "$(r "$CONF")"
        say "wrote $CONF from deploy/wattbus.example.toml: add your meters there, then run this again"
    fi
    own root:wattbus 0640 $CONF
    dir wattbus:wattbus 0750 /var/lib/wattbus
}

broker_files() {
    dir root:mosquitto 0750 $BROKER
    dir root:root 0755 $BROKER_D
    put "$SRC/mosquitto/mosquitto.prod.conf" root:mosquitto 0640 $BROKER/mosquitto.conf
    put "$SRC/mosquitto/conf.d/wattbus.conf" root:root 0644 $BROKER_D/wattbus.conf
    if [ -n "$TLS_DIR" ]; then
        for f in ca.crt server.crt server.key; do
            [ -r "$TLS_DIR/$f" ] || die "--tls $TLS_DIR: $f missing (mosquitto/make-test-ca.sh makes a test set)"
        done
        dir root:mosquitto 0750 $BROKER/certs
        put "$TLS_DIR/ca.crt" root:mosquitto 0644 $BROKER/certs/ca.crt
        put "$TLS_DIR/server.crt" root:mosquitto 0644 $BROKER/certs/server.crt
        put "$TLS_DIR/server.key" root:mosquitto 0640 $BROKER/certs/server.key
        put "$SRC/mosquitto/tls.conf" root:root 0644 $BROKER_D/tls.conf
    fi
    if [ ! -f "$(r $BROKER/passwd)" ]; then : > "$(r $BROKER/passwd)"; fi
    own root:mosquitto 0640 $BROKER/passwd
    dir root:root 0700 $SECRETS
    dir root:root 0755 $UNITS/mosquitto.service.d
    put "$SRC/deploy/systemd/mosquitto-wattbus.conf" root:root 0644 $UNITS/mosquitto.service.d/wattbus.conf
}

list_processes() {
    [ -f "$PROCESSES" ] || configured_processes
    while IFS="$(printf '\t')" read -r name kind type user needs; do
        [ "$user" = "$name" ] || die "process $name logs in as broker user '$user': install.sh makes one user per \
process, named after it (remove \`username\` from [mqtt] in $CONF)"
    done < "$PROCESSES"
}

users_and_acl() {
    while IFS="$(printf '\t')" read -r name kind type user needs; do
        if [ ! -s "$(r "$SECRETS/$name.pass")" ] || ! grep -q "^$name:" "$(r $BROKER/passwd)"; then
            # a password already in NAME.pass is kept (--keep); a new process gets a new one
            "$SRC/mosquitto/make-user.sh" --keep "$name" "$(r $BROKER/passwd)" "$(r "$SECRETS")" </dev/null 2>/dev/null
            CHANGED="$CHANGED $BROKER/passwd"
            say "broker user $name for $kind $name ($type): password in $SECRETS/$name.pass"
        fi
        own root:root 0600 "$SECRETS/$name.pass"
    done < "$PROCESSES"
    own root:mosquitto 0640 $BROKER/passwd
    set -- -o "$(r $BROKER/acl)"
    [ ! -f "$(r $BROKER/acl.local)" ] || set -- "$@" --extra "$(r $BROKER/acl.local)"
    before=$(cat "$(r $BROKER/acl)" 2>/dev/null || true)
    wattbus acl "$@" </dev/null
    [ "$before" = "$(cat "$(r $BROKER/acl)")" ] || CHANGED="$CHANGED $BROKER/acl"
    own root:mosquitto 0640 $BROKER/acl
}

group_exists() {
    if on_host; then getent group "$1" >/dev/null; else ! [ -f "$(r /etc/group)" ] || grep -q "^$1:" "$(r /etc/group)"; fi
}

units() {
    put "$SRC/deploy/systemd/wattbus@.service" root:root 0644 "$UNITS/wattbus@.service"
    while IFS="$(printf '\t')" read -r name kind type user needs; do
        d="$UNITS/wattbus@$name.service.d"
        if [ "$needs" = "-" ]; then
            [ -d "$(r "$d")" ] && rm -rf "$(r "$d")" && CHANGED="$CHANGED $d" && say "removed $d"
            continue
        fi
        dropin="$SRC/deploy/systemd/hardware-$needs.conf"
        if [ "$needs" = spi ] && ! { group_exists spi && group_exists gpio; }; then
            say "WARNING: $name needs SPI but this host has no spi/gpio group: enable SPI (raspi-config) and run again"
            continue
        fi
        dir root:root 0755 "$d"
        put "$dropin" root:root 0644 "$d/hardware.conf"
    done < "$PROCESSES"
}

verify_units() {
    if ! command -v systemd-analyze >/dev/null 2>&1; then say "systemd-analyze missing: units not verified"; return; fi
    if ! on_host && [ ! -f "$(r /usr/lib/systemd/system/sysinit.target)" ] && [ ! -f "$(r /lib/systemd/system/sysinit.target)" ]; then
        say "(--root) $ROOT holds no systemd units: systemd-analyze verify skipped"
        return
    fi
    set --
    while IFS="$(printf '\t')" read -r name kind type user needs; do set -- "$@" "wattbus@$name.service"; done \
        < "$PROCESSES"
    [ $# -gt 0 ] || return 0
    if on_host; then out=$(systemd-analyze verify "$@" 2>&1) || { printf '%s\n' "$out" >&2; die "unit check failed"; }
    else out=$(systemd-analyze verify --root="$ROOT" "$@" 2>&1) || { printf '%s\n' "$out" >&2; die "unit check failed"; }
    fi
}

enable_units() {
    # processes that left the config: unit disabled and stopped, broker user and password removed
    configured=" $(cut -f1 "$PROCESSES" | tr '\n' ' ') "
    for name in $(enabled_processes); do
        case "$configured" in *" $name "*) continue ;; esac
        unit_enable disable "wattbus@$name.service" </dev/null
        if grep -q "^$name:" "$(r $BROKER/passwd)"; then
            mosquitto_passwd -D "$(r $BROKER/passwd)" "$name" >/dev/null
            CHANGED="$CHANGED $BROKER/passwd"
        fi
        rm -f "$(r "$SECRETS/$name.pass")"
        rm -rf "$(r "$UNITS/wattbus@$name.service.d")"
        say "process $name is no longer configured: unit disabled, broker user removed"
    done
    if on_host; then
        systemctl daemon-reload
        if changed "$UNITS/mosquitto.service.d/wattbus.conf" || changed "$BROKER/mosquitto.conf" ||
            changed "$BROKER_D/wattbus.conf" || changed "$BROKER_D/tls.conf" || changed "$BROKER/certs/server.crt"; then
            systemctl enable mosquitto.service >/dev/null 2>&1 || true
            [ "$NO_START" = 1 ] || systemctl restart mosquitto.service
        elif changed "$BROKER/passwd" || changed "$BROKER/acl"; then
            [ "$NO_START" = 1 ] || systemctl reload-or-restart mosquitto.service
        fi
    else
        say "(--root) skipped: systemctl daemon-reload, mosquitto restart/reload"
    fi
    while IFS="$(printf '\t')" read -r name kind type user needs; do
        if [ ! -L "$(r "$WANTS/wattbus@$name.service")" ]; then
            unit_enable enable "wattbus@$name.service" </dev/null
            say "enabled wattbus@$name"
        elif on_host && [ "$NO_START" = 0 ]; then
            if changed "$VENV" || changed "$UNITS/wattbus@.service" || changed "$UNITS/wattbus@$name.service.d/hardware.conf"; then
                systemctl restart "wattbus@$name.service" </dev/null
            else
                systemctl start "wattbus@$name.service" </dev/null
            fi
        fi
    done < "$PROCESSES"
}

rotate() {
    grep -q "^$ROTATE$(printf '\t')" "$PROCESSES" || die "--rotate $ROTATE: no such process in $CONF"
    "$SRC/mosquitto/make-user.sh" "$ROTATE" "$(r $BROKER/passwd)" "$(r "$SECRETS")" 2>/dev/null
    own root:root 0600 "$SECRETS/$ROTATE.pass"
    own root:mosquitto 0640 $BROKER/passwd
    say "new password for $ROTATE in $SECRETS/$ROTATE.pass"
    if on_host; then
        systemctl reload-or-restart mosquitto.service
        systemctl restart "wattbus@$ROTATE.service"
    else
        say "(--root) skipped: systemctl reload mosquitto, restart wattbus@$ROTATE"
    fi
}

uninstall() {
    for name in $(enabled_processes); do unit_enable disable "wattbus@$name.service" </dev/null; done
    rm -rf "$(r "$UNITS/wattbus@.service")" "$(r "$UNITS")"/wattbus@*.service.d \
        "$(r "$UNITS/mosquitto.service.d/wattbus.conf")" "$(r /opt/wattbus)" "$(r $BROKER)" "$(r $BROKER_D)"
    rmdir "$(r "$UNITS/mosquitto.service.d")" 2>/dev/null || true
    if on_host; then
        systemctl daemon-reload
        systemctl try-restart mosquitto.service || true
    fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$(r $ETC)" "$(r /var/lib/wattbus)"
        on_host || rm -f "$OWNERS"
        if on_host; then
            getent passwd wattbus >/dev/null && userdel wattbus
        else
            say "(--root) skipped: userdel wattbus"
        fi
        say "removed wattbus, its config, passwords and data"
    else
        if ! on_host && [ -f "$OWNERS" ]; then
            grep -v -e " $BROKER" -e " /opt/wattbus" -e " $UNITS" "$OWNERS" > "$WORK/owners" || true
            cat "$WORK/owners" > "$OWNERS"
        fi
        say "removed wattbus's units, venv and broker config; kept $ETC (config, passwords) and /var/lib/wattbus"
        say "(--uninstall --purge removes those and the user wattbus too)"
    fi
}

# -- main ----------------------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi
packages
system_user
config
venv
broker_files
list_processes
if [ -n "$ROTATE" ]; then
    rotate
    exit 0
fi
users_and_acl
units
verify_units
enable_units
if on_host; then
    wattbus check-config >&2 || die "wattbus check-config failed: fix $CONF and run this again"
else
    say "(--root) skipped: wattbus check-config (its password files are under $ROOT, the config names /etc)"
fi
say "done: $(cut -f1 "$PROCESSES" | tr '\n' ' ')-- journalctl -u 'wattbus@*' to watch them"
