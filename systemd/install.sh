#!/usr/bin/env bash
# Install (or remove) the waste sorter as a systemd service on Raspberry Pi OS Bookworm.
# Run from a checkout of the project: sudo systemd/install.sh   (idempotent: run it again to update)
set -euo pipefail

usage() {
    cat <<'EOF'
usage: sudo systemd/install.sh [--no-start] [--operator USER]
       sudo systemd/install.sh --uninstall [--purge]

Installs the waste sorter as waste-sorter.service:
  user/group   waste-sorter (in the video and gpio groups)
  venv         /opt/waste-sorter/venv (--system-site-packages: picamera2 from apt)
  config       /etc/waste-sorter/config.toml (copied from device/config.example.toml if absent)
  calibration  /var/lib/waste-sorter
  logs         /var/log/waste-sorter/sort.jsonl
  unit         /etc/systemd/system/waste-sorter.service (enabled and started)
  web page     /etc/systemd/system/waste-sorter-web.service (installed, off: systemctl enable --now waste-sorter-web)
  mqtt         /etc/systemd/system/waste-sorter-mqtt.service, user waste-sorter-mqtt (installed, off: set
               [mqtt] in the config, then systemctl enable --now waste-sorter-mqtt)

options:
  --no-start       install and enable, but do not (re)start the service
  --operator USER  also add USER to the waste-sorter group (reads logs and status; calibrating
                   still runs as the service user: sudo -u waste-sorter waste-sorter calibrate ...)
  --uninstall      stop and remove the unit, the venv and the user; keep config, calibration, logs
  --purge          with --uninstall: also delete config, calibration and logs
  -h, --help       this help
EOF
}

SERVICE=waste-sorter.service
SVC_USER=waste-sorter
PREFIX=/opt/waste-sorter
VENV=$PREFIX/venv
CONF_DIR=/etc/waste-sorter
STATE_DIR=/var/lib/waste-sorter
LOG_DIR=/var/log/waste-sorter
UNIT_DST=/etc/systemd/system/$SERVICE
WEB_SERVICE=waste-sorter-web.service  # the technician's page: installed, never enabled here
WEB_UNIT_DST=/etc/systemd/system/$WEB_SERVICE
MQTT_SERVICE=waste-sorter-mqtt.service  # the MQTT publisher: installed, never enabled here
MQTT_UNIT_DST=/etc/systemd/system/$MQTT_SERVICE
MQTT_USER=waste-sorter-mqtt
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

mode=install
purge=0
start=1
operator=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        --no-start) start=0 ;;
        --operator) [ $# -ge 2 ] || { echo "install.sh: --operator needs a user" >&2; exit 2; }
                    operator=$2; shift ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$purge" = 1 ] && [ "$mode" != uninstall ]; then
    echo "install.sh: --purge only goes with --uninstall" >&2; exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 $*)" >&2; exit 1
fi

say() { echo "install.sh: $*"; }

do_uninstall() {
    if systemctl list-unit-files "$SERVICE" >/dev/null 2>&1; then
        systemctl disable --now "$SERVICE" 2>/dev/null || true
    fi
    systemctl disable --now "$WEB_SERVICE" "$MQTT_SERVICE" 2>/dev/null || true
    rm -f "$UNIT_DST" "$WEB_UNIT_DST" "$MQTT_UNIT_DST"
    systemctl daemon-reload
    systemctl reset-failed "$SERVICE" 2>/dev/null || true
    rm -rf "$PREFIX"
    [ -L /usr/local/bin/waste-sorter ] && rm -f /usr/local/bin/waste-sorter
    if id -u "$SVC_USER" >/dev/null 2>&1; then
        userdel "$SVC_USER" || true
    fi
    if getent group "$SVC_USER" >/dev/null; then
        groupdel "$SVC_USER" 2>/dev/null || true
    fi
    if id -u "$MQTT_USER" >/dev/null 2>&1; then
        userdel "$MQTT_USER" || true
    fi
    if [ "$purge" = 1 ]; then
        rm -rf "$CONF_DIR" "$STATE_DIR" "$LOG_DIR" "/var/lib/$MQTT_USER"
        say "removed the service, venv, user, config, calibration and logs"
    else
        say "removed the service, venv and user; kept $CONF_DIR, $STATE_DIR and $LOG_DIR (--purge deletes them)"
    fi
}

do_install() {
    [ -f "$SRC_DIR/pyproject.toml" ] || { echo "install.sh: no pyproject.toml in $SRC_DIR" >&2; exit 1; }

    say "packages (apt)"
    apt-get update -qq
    apt-get install -y --no-install-recommends python3-venv python3-picamera2 python3-matplotlib >/dev/null

    say "user $SVC_USER (groups video, gpio)"
    getent group video >/dev/null || groupadd --system video
    getent group gpio >/dev/null || groupadd --system gpio
    if ! id -u "$SVC_USER" >/dev/null 2>&1; then
        useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "waste sorter" "$SVC_USER"
    fi
    usermod -a -G video,gpio "$SVC_USER"
    if ! id -u "$MQTT_USER" >/dev/null 2>&1; then  # the publisher: reads the (world-readable) log and status
        useradd --system --user-group --home-dir "/var/lib/$MQTT_USER" --no-create-home \
            --shell /usr/sbin/nologin --comment "waste sorter MQTT publisher" "$MQTT_USER"
    fi
    if [ -n "$operator" ]; then
        usermod -a -G "$SVC_USER" "$operator"
    fi

    say "venv $VENV"
    install -d -m 0755 "$PREFIX"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv --system-site-packages "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --upgrade pip
    # the pi extra pins numpy<2 and opencv<4.12: apt's picamera2/simplejpeg break under numpy 2
    "$VENV/bin/pip" install --quiet --upgrade "$SRC_DIR[pi,mqtt]"   # mqtt: paho-mqtt, for the publisher only
    if ! err=$("$VENV/bin/python" -c "import numpy, cv2, picamera2" 2>&1); then
        echo "install.sh: the venv cannot import numpy, cv2 and picamera2 together: $(echo "$err" | tail -n 1)" >&2
        exit 1
    fi
    install -d -m 0755 "$PREFIX/systemd"
    install -m 0644 "$SRC_DIR/systemd/README.md" "$PREFIX/systemd/README.md"
    ln -sfn "$VENV/bin/waste-sorter" /usr/local/bin/waste-sorter   # for operators over SSH

    say "config $CONF_DIR/config.toml, calibration $STATE_DIR, logs $LOG_DIR"
    install -d -m 0755 "$CONF_DIR"
    if [ ! -e "$CONF_DIR/config.toml" ]; then
        if [ -f "$SRC_DIR/device/config.example.toml" ]; then
            install -m 0644 "$SRC_DIR/device/config.example.toml" "$CONF_DIR/config.toml"
        else
            echo "install.sh: warning: no device/config.example.toml; write $CONF_DIR/config.toml yourself" >&2
        fi
    fi
    install -d -m 0755 -o "$SVC_USER" -g "$SVC_USER" "$STATE_DIR" "$LOG_DIR"

    say "unit $UNIT_DST"
    install -m 0644 "$SRC_DIR/systemd/$SERVICE" "$UNIT_DST"
    install -m 0644 "$SRC_DIR/systemd/$WEB_SERVICE" "$WEB_UNIT_DST"
    install -m 0644 "$SRC_DIR/systemd/$MQTT_SERVICE" "$MQTT_UNIT_DST"
    systemctl daemon-reload
    systemctl enable "$SERVICE" >/dev/null
    if [ "$start" = 1 ]; then
        systemctl restart "$SERVICE"
        say "started; check with: waste-sorter status   (or journalctl -u $SERVICE)"
    else
        say "enabled; start with: systemctl start $SERVICE"
    fi
    say "web page (off): systemctl enable --now $WEB_SERVICE, then ssh -L 8080:localhost:8080 this host"
    say "mqtt (off): set [mqtt] in $CONF_DIR/config.toml (password in $CONF_DIR/mqtt-password, owner $MQTT_USER,"
    say "  mode 0600), check it with: waste-sorter mqtt --config $CONF_DIR/config.toml --check-config;"
    say "  then systemctl enable --now $MQTT_SERVICE"
    if ! grep -qs '^dtparam=strict_gpiod' /boot/firmware/config.txt; then
        say "note: add dtparam=strict_gpiod to /boot/firmware/config.txt (see systemd/README.md)"
    fi
}

"do_$mode"
