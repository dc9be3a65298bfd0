"""The failsafe as it runs on an AWS instance or an SSH-pool host, with no Styx process:
a shell watcher that reads the deadline file (``~/.styx/failsafe``: ``<epoch deadline>
<grace seconds> <action>``) and acts once ``max(deadline, boot or start) + grace`` has
passed. See ``styx.contracts.failsafe`` for the whole picture.

- ``aws_user_data(user, minutes, grace, down)``: the instance's user-data (run as root at
  first boot by cloud-init): installs ``/usr/local/bin/styx-failsafe`` and a systemd timer
  that runs it every minute (a root cron line where there is no systemd), writes the first
  deadline (boot + the autostop window) when the cluster is launched with autostop, and
  makes the file the login user's so that Styx can push it over SSH. Its action is
  ``shutdown -h now``; the instance's ``InstanceInitiatedShutdownBehavior`` (stop, or
  terminate for ``--down`` and spot) decides what that does.
- ``ssh_watcher_command()``: what an SSH-pool host runs (no root): a detached loop, started
  once (its pid in ``~/.styx/failsafe.pid``), whose action is to kill Styx's jobs there,
  remove ``~/.styx/jobs`` and ``~/styx_workdir``, leave ``~/.styx/failsafe.fired`` and exit.
- ``push_command(deadline, grace, action)``: the shell that writes the deadline (atomically)
  and prints ``FIRED <action>`` if the node already acted, for the push to report.
"""

from __future__ import annotations

import shlex

from styx.contracts.failsafe import FAILSAFE_FILE, FIRED_FILE

__all__ = ["CHECK_SCRIPT", "aws_user_data", "push_command", "ssh_watcher_command"]

#: Decides whether the deadline passed: exits 0 (act now) or 1. Needs only POSIX sh and
#: /proc/uptime (or the start time given as $1).
CHECK_SCRIPT = r"""
f="$1"; started="$2"
[ -r "$f" ] || exit 1
read deadline grace action < "$f" || exit 1
case "$deadline$grace" in *[!0-9]*|'') exit 1;; esac
now=$(date +%s)
[ -n "$started" ] || started=$(( now - $(cut -d. -f1 /proc/uptime) ))
[ "$deadline" -lt "$started" ] && deadline=$started
[ "$now" -ge $(( deadline + grace )) ] || exit 1
echo "$action"
exit 0
"""


def aws_user_data(user: str, minutes: int | None, grace_seconds: int, down: bool) -> str:
    """The user-data script that installs the instance's own failsafe timer."""
    home = f"/home/{user}"
    file = f"{home}/{FAILSAFE_FILE}"
    action = "terminate" if down else "stop"
    first = ""
    if minutes is not None:
        first = (f'echo "$(( $(date +%s) + {int(minutes) * 60} )) {int(grace_seconds)} {action}" > {file}\n')
    return f"""#!/bin/sh
# Styx failsafe: this instance stops itself if Styx stops pushing its deadline
# ({file}: <epoch deadline> <grace seconds> <action>).
mkdir -p {home}/.styx
{first}chown -R {user}: {home}/.styx 2>/dev/null || true
cat > /usr/local/bin/styx-failsafe-check <<'STYX_EOF'
#!/bin/sh{CHECK_SCRIPT}STYX_EOF
cat > /usr/local/bin/styx-failsafe <<'STYX_EOF'
#!/bin/sh
if what=$(/usr/local/bin/styx-failsafe-check {file}); then
  logger -t styx-failsafe "deadline passed: $what" 2>/dev/null
  shutdown -h now "styx failsafe: Styx did not push this node's deadline"
fi
STYX_EOF
chmod 755 /usr/local/bin/styx-failsafe-check /usr/local/bin/styx-failsafe
if command -v systemctl >/dev/null 2>&1; then
  cat > /etc/systemd/system/styx-failsafe.service <<'STYX_EOF'
[Unit]
Description=Styx failsafe: stop this instance when its deadline passed
[Service]
Type=oneshot
ExecStart=/usr/local/bin/styx-failsafe
STYX_EOF
  cat > /etc/systemd/system/styx-failsafe.timer <<'STYX_EOF'
[Unit]
Description=Styx failsafe check, every minute
[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
[Install]
WantedBy=timers.target
STYX_EOF
  systemctl daemon-reload && systemctl enable --now styx-failsafe.timer
else
  echo "* * * * * root /usr/local/bin/styx-failsafe" > /etc/cron.d/styx-failsafe
fi
"""


def _check_function() -> str:
    return "styx_failsafe_check() {\n" + "\n".join(
        "  " + line for line in CHECK_SCRIPT.strip().replace("exit ", "return ").splitlines()) + "\n}\n"


def ssh_watcher_command(interval: int = 30) -> str:
    """Start the SSH-pool host's watcher unless it runs already (idempotent)."""
    script = f"""{_check_function()}
started=$(date +%s)
while sleep {int(interval)}; do
  if styx_failsafe_check "$HOME/{FAILSAFE_FILE}" "$started" >/dev/null; then
    for p in "$HOME"/.styx/jobs/*/*.pid; do
      [ -r "$p" ] && kill -TERM "-$(cat "$p")" 2>/dev/null
    done
    sleep 3
    for p in "$HOME"/.styx/jobs/*/*.pid; do
      [ -r "$p" ] && kill -KILL "-$(cat "$p")" 2>/dev/null
    done
    rm -rf "$HOME/.styx/jobs" "$HOME/styx_workdir"
    echo "stop $(date +%s)" > "$HOME/{FIRED_FILE}"
    rm -f "$HOME/.styx/failsafe.pid"
    exit 0
  fi
done
"""
    quoted = shlex.quote(script)
    return (
        'mkdir -p "$HOME/.styx" && '
        'if [ -r "$HOME/.styx/failsafe.pid" ] && kill -0 "$(cat "$HOME/.styx/failsafe.pid")" 2>/dev/null; '
        "then :; else "
        f"setsid nohup sh -c {quoted} > /dev/null 2>&1 < /dev/null & echo $! > \"$HOME/.styx/failsafe.pid\"; "
        "fi"
    )


def push_command(deadline: float | None, grace_seconds: int, action: str) -> str:
    """Write (or, for None, remove) the deadline file; print ``FIRED <action>`` first if the
    node acted already (its fired marker is left for the caller to read)."""
    report = f'if [ -e "$HOME/{FIRED_FILE}" ]; then echo "FIRED {action}"; fi; '
    if deadline is None:
        return report + f'rm -f "$HOME/{FAILSAFE_FILE}"'
    line = f"{int(deadline)} {int(grace_seconds)} {action}"
    return (report + 'mkdir -p "$HOME/.styx" && '
            f'printf "%s\\n" {shlex.quote(line)} > "$HOME/{FAILSAFE_FILE}.tmp" && '
            f'mv -f "$HOME/{FAILSAFE_FILE}.tmp" "$HOME/{FAILSAFE_FILE}"')
