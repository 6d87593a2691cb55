"""The supervisord configuration of `fleet up`: a program a process, stopped gracefully."""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

from core.settings import Settings

STOP_GRACE = 6  # seconds a program gets after SIGTERM; Ctrl-C must end the fleet within 10
# Programs of one priority form a group, which supervisord stops at once: it stops one group
# after the other, each taking up to a turn of its one-second loop, so ten groups of one
# program would spend most of those 10 s waiting.
LOG_MAX_BYTES = 50 * 1024 * 1024  # a program's log file is rotated past this
LOG_BACKUPS = 3
STAGES = {10: "broker", 20: "simulators", 30: "workers", 50: "front", 60: "demo"}


@dataclass
class Program:
    name: str
    args: list[str]
    priority: int
    oneshot: bool = False  # runs once after the others start, is not restarted

    @property
    def command(self) -> str:
        return shlex.join([sys.executable, "-m", "fleet", *self.args])


def programs(settings: Settings, *, host: str, port: int, processes: int, threads: int, extra: list[Program]) -> list[Program]:
    listed = []
    if settings.embedded_broker:
        listed.append(Program("redis", ["redis"], 10))
    listed += extra
    listed += [
        Program("worker", ["worker", "-p", str(processes), "-t", str(threads)], 30),
        Program("scheduler", ["scheduler"], 50),
        Program("web", ["web", "--host", host, "--port", str(port)], 50),
    ]
    return listed


def supervisord_config(settings: Settings, listed: list[Program]) -> str:
    var = settings.var_dir
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={var}/log/supervisord.log",
        f"pidfile={var}/supervisord.pid",
        f"childlogdir={var}/log",
        "loglevel=warn",
        "",
        "[unix_http_server]",
        f"file={var}/supervisor.sock",
        "chmod=0700",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{var}/supervisor.sock",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for program in listed:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={program.command}",
            f"priority={program.priority}",
            f"autorestart={'false' if program.oneshot else 'true'}",
            f"startsecs={0 if program.oneshot else 1}",
            "startretries=5",
            f"stopwaitsecs={STOP_GRACE}",
            # SIGTERM to the program only: Dramatiq's main process forwards it to its workers,
            # and a second SIGTERM sent to the whole group would kill them without a graceful stop.
            "stopasgroup=false",
            "killasgroup=true",
            # a program's log lines (JSON) go to var/log/<name>.log, not to the console: the
            # console shows supervisord's warnings (a program that exits or will not start)
            "redirect_stderr=true",
            f"stdout_logfile={var}/log/{program.name}.log",
            f"stdout_logfile_maxbytes={LOG_MAX_BYTES}",
            f"stdout_logfile_backups={LOG_BACKUPS}",
        ]
    by_priority: dict[int, list[str]] = {}
    for program in listed:
        by_priority.setdefault(program.priority, []).append(program.name)
    for priority, names in sorted(by_priority.items()):
        if len(names) > 1:
            lines += ["", f"[group:{STAGES.get(priority, f'stage{priority}')}]", f"programs={','.join(names)}",
                      f"priority={priority}"]
    return "\n".join(lines) + "\n"
