"""systemd's notify protocol (sd_notify(3)): READY, the watchdog, STOPPING.

``wattbus@.service`` is ``Type=notify`` with ``WatchdogSec=``: systemd counts a process started when it says
``READY=1`` and kills and restarts it when ``WATCHDOG=1`` stops coming. The watchdog is fed only while the
process's vital threads live (the plugin's main thread and the MQTT network thread), so a process whose
MQTT loop died is restarted instead of sitting there looking "active". Outside systemd ($NOTIFY_SOCKET
unset) all of this does nothing.

Hand-written on purpose: the protocol is one datagram per message on a unix socket; the ``sdnotify``
package is these same lines (unmaintained since 2017) and ``systemd-python`` needs libsystemd headers and a
compiler on the Pi.
"""

from __future__ import annotations

import os
import socket
import threading


def _send(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # "@..." is an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), address)
        return True
    except OSError:
        return False


def notify_systemd(ctx, network_thread: str = "paho-mqtt-client-") -> threading.Thread | None:
    """Tell systemd the process is up, then feed its watchdog until the process stops (``STOPPING=1``).

    Ready means initialised and connecting, not connected: a process works through a broker outage (its
    offline queue), so the broker being down must not fail the unit's start. ``network_thread`` is the name
    (prefix) of the MQTT network thread paho runs.
    """
    if not _send(f"READY=1\nSTATUS=running {ctx.kind} {ctx.name}\nMAINPID={os.getpid()}"):
        return None
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        usec = "0"
    every = int(usec) / 1e6 / 3  # three chances per watchdog period
    main = threading.main_thread()

    def alive() -> bool:
        return main.is_alive() and any(t.name.startswith(network_thread) for t in threading.enumerate())

    def loop() -> None:
        while not ctx.stopping.wait(every if every > 0 else None):
            if alive():
                _send("WATCHDOG=1")
            else:
                ctx.log.error("a vital thread died: no longer feeding systemd's watchdog, expect a restart")
                return
        _send("STOPPING=1")
        while every > 0:  # keep the watchdog quiet during the (at most 10 s) shutdown
            _send("WATCHDOG=1")
            threading.Event().wait(every)

    t = threading.Thread(target=loop, name="sd-notify", daemon=True)
    t.start()
    return t
