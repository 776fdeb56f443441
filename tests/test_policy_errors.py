"""The invalid-policy corpus: each policy must produce exactly these issues.

Every case is a TOML document and the full list of ``(line, key, message)``
it must give, in order, so a changed message, a wrong key, a lost line or an
extra issue all fail.  ``W`` is a minimal valid service on lines 1-2, so a
key added after it is on line 3.
"""

from __future__ import annotations

import pytest

from nsup._errors import NsupError, PolicyError
from nsup._policy import load_policy

W = '[services.web]\ncommand = "x"\n'
SERVICE_KEYS = (
    "'command', 'type', 'depends_on', 'restart', 'success_codes', 'backoff', 'namespaces', "
    "'namespaces_from', 'init', 'hostname', 'env', 'env_file', 'env_inherit', 'sockets', "
    "'cwd', 'stop', 'limits', 'ready', 'health', 'instances', 'stdout', 'stderr', "
    "'mounts', 'rootfs', 'uid_map', 'gid_map', 'user', 'group', 'groups', 'umask', "
    "'capabilities' and 'no_new_privs'"
)
DURATION = "a duration such as '250ms', '5s', '2m', '1h' or '1m30s', or a number of seconds"
SIZE = "a size such as '64K', '256M' or '1G' (binary multiples), or a number of bytes"
SIGNAL = "a signal name such as 'SIGTERM' or 'TERM', or a signal number"
ID_OR_NAME = "a name such as 'www-data' or a number from 0 to 4294967294"
UMASK = "a umask: an octal string such as '027' or an integer from 0 to 511"
ONE_PROBE = "must have exactly one of 'notify', 'tcp', 'exec' or 'log'"
ONE_HEALTH = "must have exactly one of 'tcp', 'exec' or 'log'"
NO_SERVICES = "'services' must be a table with at least one [services.NAME] table"

CASES = {
    # --- types and enum values -------------------------------------------------------------
    "restart-enum": (
        W + 'restart = "sometimes"',
        [
            (
                3,
                "services.web.restart",
                (
                    "'services.web.restart' must be one of 'always', 'on-failure', 'never' "
                    "(got 'sometimes')"
                ),
            )
        ],
    ),
    "restart-enum-hint": (
        W + 'restart = "alway"',
        [
            (
                3,
                "services.web.restart",
                (
                    "'services.web.restart' must be one of 'always', 'on-failure', 'never' "
                    "(got 'alway'); did you mean 'always'?"
                ),
            )
        ],
    ),
    "restart-type": (
        W + "restart = 1",
        [
            (
                3,
                "services.web.restart",
                "'services.web.restart' must be one of 'always', 'on-failure', 'never' (got 1)",
            )
        ],
    ),
    "init-type": (
        W + 'init = "yes"',
        [(3, "services.web.init", "'services.web.init' must be true or false (got 'yes')")],
    ),
    "instances-zero": (
        W + "instances = 0",
        [(3, "services.web.instances", "'services.web.instances' must be positive (got 0)")],
    ),
    "instances-float": (
        W + "instances = 1.5",
        [(3, "services.web.instances", "'services.web.instances' must be an integer (got 1.5)")],
    ),
    "instances-bool": (
        W + "instances = true",
        [(3, "services.web.instances", "'services.web.instances' must be an integer (got true)")],
    ),
    "cwd-relative": (
        W + 'cwd = "srv"',
        [(3, "services.web.cwd", "'services.web.cwd' must be an absolute path (got 'srv')")],
    ),
    "stdout-relative": (
        W + 'stdout = "log.txt"',
        [
            (
                3,
                "services.web.stdout",
                (
                    "'services.web.stdout' must be 'inherit', 'null', 'journal', 'syslog', an "
                    "absolute file path or { file = PATH, max_size = SIZE, backups = N } "
                    "(got 'log.txt')"
                ),
            )
        ],
    ),
    "stdout-table": (
        W + 'stderr = { max_size = "0", backups = 1001, rotate = true }',
        [
            (
                3,
                "services.web.stderr.rotate",
                (
                    "'services.web.stderr.rotate' is not a known key; known keys are 'file', "
                    "'max_size' and 'backups'"
                ),
            ),
            (3, "services.web.stderr", "'services.web.stderr' is missing the required key 'file'"),
            (
                3,
                "services.web.stderr.max_size",
                "'services.web.stderr.max_size' must be positive (got '0')",
            ),
            (
                3,
                "services.web.stderr.backups",
                "'services.web.stderr.backups' must be at most 1000 (got 1001)",
            ),
        ],
    ),
    "timestamps-string": (
        '[supervisor]\ntimestamps = "yes"\n' + W,
        [(2, "supervisor.timestamps", "'supervisor.timestamps' must be true or false (got 'yes')")],
    ),
    "env-int": (
        W + "env = { PORT = 8080 }",
        [
            (
                3,
                "services.web.env.PORT",
                "'services.web.env.PORT' must be a string (got 8080); quote it",
            )
        ],
    ),
    "env-type": (
        W + 'env = "PORT=1"',
        [(3, "services.web.env", "'services.web.env' must be a table of strings (got 'PORT=1')")],
    ),
    "hostname-long": (
        W + f'namespaces = ["uts"]\nhostname = "{"h" * 65}"',
        [
            (
                4,
                "services.web.hostname",
                f"'services.web.hostname' must be at most 64 bytes long (got '{'h' * 65}')",
            )
        ],
    ),
    "hostname-empty": (
        W + 'hostname = ""',
        [(3, "services.web.hostname", "'services.web.hostname' must not be empty")],
    ),
    # --- command ---------------------------------------------------------------------------
    "command-missing": (
        '[services.web]\nrestart = "always"',
        [(1, "services.web", "'services.web' is missing the required key 'command'")],
    ),
    "command-empty-list": (
        "[services.web]\ncommand = []",
        [(2, "services.web.command", "'services.web.command' must not be empty")],
    ),
    "command-empty-string": (
        '[services.web]\ncommand = "  "',
        [(2, "services.web.command", "'services.web.command' must not be empty")],
    ),
    "command-element-type": (
        '[services.web]\ncommand = ["x", 5]',
        [(2, "services.web.command[1]", "'services.web.command[1]' must be a string (got 5)")],
    ),
    "command-quoting": (
        "[services.web]\ncommand = 'echo \"hi'",
        [
            (
                2,
                "services.web.command",
                (
                    "'services.web.command' could not be split like a shell would: "
                    "No closing quotation (got 'echo \"hi')"
                ),
            )
        ],
    ),
    "command-type": (
        "[services.web]\ncommand = 5",
        [
            (
                2,
                "services.web.command",
                "'services.web.command' must be a list of strings or a command line string (got 5)",
            )
        ],
    ),
    # --- unknown keys ----------------------------------------------------------------------
    "unknown-service-key-hint": (
        W + 'restrat = "always"',
        [
            (
                3,
                "services.web.restrat",
                "'services.web.restrat' is not a known key; did you mean 'restart'?",
            )
        ],
    ),
    "unknown-service-key-list": (
        W + "zzzzz = 1",
        [
            (
                3,
                "services.web.zzzzz",
                f"'services.web.zzzzz' is not a known key; known keys are {SERVICE_KEYS}",
            )
        ],
    ),
    "unknown-top-level": (
        '[service.web]\ncommand = "x"',
        [
            (None, "services", f"{NO_SERVICES} (got none)"),
            (1, "service", "'service' is not a known key; did you mean 'services'?"),
        ],
    ),
    "unknown-supervisor-key": (
        '[supervisor]\nstratgy = "one_for_all"\n' + W,
        [
            (
                2,
                "supervisor.stratgy",
                "'supervisor.stratgy' is not a known key; did you mean 'strategy'?",
            )
        ],
    ),
    "unknown-defaults-key": (
        '[defaults]\nrestrat = "always"\n' + W,
        [(2, "defaults.restrat", "'defaults.restrat' is not a known key; did you mean 'restart'?")],
    ),
    "unknown-backoff-key": (
        W + 'backoff = { maxx = "1s" }',
        [
            (
                3,
                "services.web.backoff.maxx",
                "'services.web.backoff.maxx' is not a known key; did you mean 'max'?",
            )
        ],
    ),
    "unknown-limits-key": (
        W + "limits = { nofiles = 10 }",
        [
            (
                3,
                "services.web.limits.nofiles",
                "'services.web.limits.nofiles' is not a known key; did you mean 'nofile'?",
            )
        ],
    ),
    # --- document shape --------------------------------------------------------------------
    "no-services": (
        '[supervisor]\nstrategy = "one_for_all"',
        [(None, "services", f"{NO_SERVICES} (got none)")],
    ),
    "services-empty": ("[services]", [(1, "services", f"{NO_SERVICES} (got {{}})")]),
    "services-not-table": ("services = 5", [(1, "services", f"{NO_SERVICES} (got 5)")]),
    "service-not-table": (
        "[services]\nweb = 5",
        [(2, "services.web", "'services.web' must be a table (got 5)")],
    ),
    "service-name": (
        '[services."we b"]\ncommand = "x"',
        [
            (
                1,
                'services."we b"',
                (
                    "'services.\"we b\"' is not a valid service name: use up to 64 letters, "
                    "digits, "
                    "'_', '-', '.' and '@', starting with a letter, digit or '_' (got 'we b')"
                ),
            )
        ],
    ),
    "defaults-not-table": (
        "defaults = 5\n" + W,
        [(1, "defaults", "'defaults' must be a table (got 5)")],
    ),
    "supervisor-not-table": (
        'supervisor = "x"\n' + W,
        [(1, "supervisor", "'supervisor' must be a table (got 'x')")],
    ),
    "toml-syntax": (
        W + "restart = \ninit = true\n",
        [(3, "", "invalid TOML: Invalid value (column 11)")],
    ),
    "toml-duplicate-key": (
        W + 'command = "y"',
        [(3, "", "invalid TOML: Cannot overwrite a value (at the end of the file)")],
    ),
    # --- supervisor ------------------------------------------------------------------------
    "strategy-enum": (
        '[supervisor]\nstrategy = "one_for_some"\n' + W,
        [
            (
                2,
                "supervisor.strategy",
                (
                    "'supervisor.strategy' must be one of 'one_for_one', 'one_for_all', "
                    "'rest_for_one' (got 'one_for_some'); did you mean 'one_for_one'?"
                ),
            )
        ],
    ),
    "max-restarts-negative": (
        "[supervisor]\nmax_restarts = -1\n" + W,
        [(2, "supervisor.max_restarts", "'supervisor.max_restarts' must not be negative (got -1)")],
    ),
    "within-zero": (
        '[supervisor]\nwithin = "0s"\n' + W,
        [(2, "supervisor.within", "'supervisor.within' must be positive (got '0s')")],
    ),
    "within-unit": (
        '[supervisor]\nwithin = "60 sec"\n' + W,
        [(2, "supervisor.within", f"'supervisor.within' must be {DURATION} (got '60 sec')")],
    ),
    "control-too-long": (
        f'[supervisor]\ncontrol = "/{"s" * 107}"\n' + W,
        [
            (
                2,
                "supervisor.control",
                f"'supervisor.control' must be at most 107 bytes long (got '/{'s' * 107}')",
            )
        ],
    ),
    "supervisor-health": (
        '[supervisor]\nhealth = "9100"\n' + W,
        [
            (
                2,
                "supervisor.health",
                "'supervisor.health' must be 'host:port' with a port from 1 to 65535 (got '9100')",
            )
        ],
    ),
    # --- dependencies and instances --------------------------------------------------------
    "depends-on-string": (
        W + 'depends_on = "db"',
        [
            (
                3,
                "services.web.depends_on",
                (
                    "'services.web.depends_on' must be a list of service names or a table of "
                    "service = condition, such as { db = \"ready\" } (got 'db')"
                ),
            )
        ],
    ),
    "depends-on-unknown": (
        '[services.db]\ncommand = "x"\n[services.web]\ncommand = "x"\ndepends_on = ["dbb"]',
        [
            (
                5,
                "services.web.depends_on",
                "'services.web.depends_on' names 'dbb', which is not a service; did you mean 'db'?",
            )
        ],
    ),
    "cycle-two": (
        (
            '[services.a]\ncommand = "x"\ndepends_on = ["b"]\n'
            '[services.b]\ncommand = "x"\ndepends_on = ["a"]'
        ),
        [
            (
                3,
                "services.a.depends_on",
                "'services.a.depends_on' makes a dependency cycle: a -> b -> a",
            )
        ],
    ),
    "cycle-self": (
        '[services.a]\ncommand = "x"\ndepends_on = ["a"]',
        [(3, "services.a.depends_on", "'services.a.depends_on' makes a dependency cycle: a -> a")],
    ),
    "cycle-three-after-ok": (
        (
            '[services.ok]\ncommand = "x"\n'
            '[services.a]\ncommand = "x"\ndepends_on = ["ok", "b"]\n'
            '[services.b]\ncommand = "x"\ndepends_on = ["c"]\n'
            '[services.c]\ncommand = "x"\ndepends_on = ["a"]'
        ),
        [
            (
                5,
                "services.a.depends_on",
                "'services.a.depends_on' makes a dependency cycle: a -> b -> c -> a",
            )
        ],
    ),
    "cycle-from-defaults": (
        '[defaults]\ndepends_on = ["a"]\n[services.a]\ncommand = "x"',
        [(2, "defaults.depends_on", "'defaults.depends_on' makes a dependency cycle: a -> a")],
    ),
    "instance-clash": (
        W + 'instances = 2\n[services."web.1"]\ncommand = "x"',
        [
            (
                3,
                "services.web.instances",
                (
                    "'services.web.instances' makes an instance named 'web.1', which clashes with "
                    "a service"
                ),
            )
        ],
    ),
    # --- namespaces ------------------------------------------------------------------------
    "namespaces-unknown": (
        W + 'namespaces = ["pid", "nett"]',
        [
            (
                3,
                "services.web.namespaces",
                (
                    "'services.web.namespaces' has unknown namespace 'nett'; "
                    "choose from cgroup, ipc, "
                    "mount, net, pid, user, uts; did you mean 'net'?"
                ),
            )
        ],
    ),
    "namespaces-string": (
        W + 'namespaces = "pid,net"',
        [
            (
                3,
                "services.web.namespaces",
                "'services.web.namespaces' must be a list of namespace names (got 'pid,net')",
            )
        ],
    ),
    "hostname-without-uts": (
        W + 'namespaces = ["pid"]\nhostname = "h"',
        [
            (
                4,
                "services.web.hostname",
                (
                    "'services.web.hostname' needs the 'uts' namespace, which "
                    "'services.web.namespaces' does not include"
                ),
            )
        ],
    ),
    "hostname-from-defaults-without-uts": (
        '[defaults]\nhostname = "h"\n' + W + "namespaces = []",
        [
            (
                2,
                "defaults.hostname",
                (
                    "'defaults.hostname' needs the 'uts' namespace, which "
                    "'services.web.namespaces' does not include"
                ),
            )
        ],
    ),
    "mounts-without-mount": (
        W + 'namespaces = ["pid"]\nmounts = [{ type = "tmpfs", target = "/tmp" }]',
        [
            (
                4,
                "services.web.mounts",
                (
                    "'services.web.mounts' needs the 'mount' namespace, which "
                    "'services.web.namespaces' does not include"
                ),
            )
        ],
    ),
    "uid-map-without-user": (
        W + "uid_map = [[0, 1000, 1]]",
        [
            (
                3,
                "services.web.uid_map",
                (
                    "'services.web.uid_map' needs the 'user' namespace, which the default "
                    "namespaces does not include"
                ),
            )
        ],
    ),
    "uid-map-shape": (
        W + 'namespaces = ["user"]\nuid_map = [[0, 1000]]',
        [
            (
                4,
                "services.web.uid_map[0]",
                (
                    "'services.web.uid_map[0]' must be [inside, outside, count]: three ids from 0 "
                    "to 4294967295, count at least 1 (got [0, 1000])"
                ),
            )
        ],
    ),
    # --- backoff and stop ------------------------------------------------------------------
    "backoff-type": (
        W + 'backoff = "fast"',
        [(3, "services.web.backoff", "'services.web.backoff' must be a table (got 'fast')")],
    ),
    "backoff-initial-unit": (
        W + 'backoff = { initial = "fast" }',
        [
            (
                3,
                "services.web.backoff.initial",
                f"'services.web.backoff.initial' must be {DURATION} (got 'fast')",
            )
        ],
    ),
    "backoff-factor": (
        W + "backoff = { factor = 0.5 }",
        [
            (
                3,
                "services.web.backoff.factor",
                "'services.web.backoff.factor' must be at least 1 (got 0.5)",
            )
        ],
    ),
    "backoff-jitter": (
        W + "backoff = { jitter = 1.5 }",
        [
            (
                3,
                "services.web.backoff.jitter",
                "'services.web.backoff.jitter' must be at most 1 (got 1.5)",
            )
        ],
    ),
    "backoff-jitter-nan": (
        W + "backoff = { jitter = nan }",
        [
            (
                3,
                "services.web.backoff.jitter",
                "'services.web.backoff.jitter' must be a finite number (got nan)",
            )
        ],
    ),
    "backoff-initial-above-max": (
        W + 'backoff = { initial = "1m" }',
        [
            (
                3,
                "services.web.backoff.initial",
                "'services.web.backoff.initial' makes 'initial' (60s) more than 'max' (30s)",
            )
        ],
    ),
    "stop-signal-typo": (
        W + 'stop = { signal = "SIGTREM" }',
        [
            (
                3,
                "services.web.stop.signal",
                (
                    f"'services.web.stop.signal' must be {SIGNAL} (got 'SIGTREM'); "
                    "did you mean 'SIGTERM'?"
                ),
            )
        ],
    ),
    "stop-signal-number": (
        W + "stop = { signal = 99 }",
        [(3, "services.web.stop.signal", f"'services.web.stop.signal' must be {SIGNAL} (got 99)")],
    ),
    "stop-timeout-negative": (
        W + "stop = { timeout = -1 }",
        [
            (
                3,
                "services.web.stop.timeout",
                "'services.web.stop.timeout' must not be negative (got -1)",
            )
        ],
    ),
    # --- limits ----------------------------------------------------------------------------
    "limits-memory-unit": (
        W + 'limits = { memory = "256MB" }',
        [
            (
                3,
                "services.web.limits.memory",
                f"'services.web.limits.memory' must be {SIZE} (got '256MB')",
            )
        ],
    ),
    "limits-memory-zero": (
        W + "limits = { memory = 0 }",
        [
            (
                3,
                "services.web.limits.memory",
                "'services.web.limits.memory' must be positive (got 0)",
            )
        ],
    ),
    "limits-pids-zero": (
        W + "limits = { pids = 0 }",
        [(3, "services.web.limits.pids", "'services.web.limits.pids' must be positive (got 0)")],
    ),
    "limits-cpu-negative": (
        W + "limits = { cpu = -1 }",
        [(3, "services.web.limits.cpu", "'services.web.limits.cpu' must be positive (got -1)")],
    ),
    "limits-nofile-type": (
        W + 'limits = { nofile = "lots" }',
        [
            (
                3,
                "services.web.limits.nofile",
                "'services.web.limits.nofile' must be an integer (got 'lots')",
            )
        ],
    ),
    "limits-core-unit": (
        W + 'limits = { core = "1X" }',
        [(3, "services.web.limits.core", f"'services.web.limits.core' must be {SIZE} (got '1X')")],
    ),
    "limits-nice-range": (
        W + "limits = { nice = 41 }",
        [(3, "services.web.limits.nice", "'services.web.limits.nice' must be at most 40 (got 41)")],
    ),
    # --- probes ----------------------------------------------------------------------------
    "ready-no-kind": (
        W + 'ready = { timeout = "5s" }',
        [(3, "services.web.ready", f"'services.web.ready' {ONE_PROBE} (got none)")],
    ),
    "ready-two-kinds": (
        W + 'ready = { tcp = "127.0.0.1:80", exec = ["true"] }',
        [(3, "services.web.ready", f"'services.web.ready' {ONE_PROBE} (got 'tcp' and 'exec')")],
    ),
    "ready-notify-false": (
        W + "ready = { notify = false }",
        [(3, "services.web.ready.notify", "'services.web.ready.notify' must be true (got false)")],
    ),
    "ready-tcp-no-port": (
        W + 'ready = { tcp = "localhost" }',
        [
            (
                3,
                "services.web.ready.tcp",
                (
                    "'services.web.ready.tcp' must be 'host:port' with a port from 1 to 65535 "
                    "(got 'localhost')"
                ),
            )
        ],
    ),
    "ready-tcp-port-range": (
        W + 'ready = { tcp = "[::1]:70000" }',
        [
            (
                3,
                "services.web.ready.tcp",
                (
                    "'services.web.ready.tcp' must be 'host:port' with a port from 1 to 65535 "
                    "(got '[::1]:70000')"
                ),
            )
        ],
    ),
    "ready-log-regex": (
        W + 'ready = { log = "(" }',
        [
            (
                3,
                "services.web.ready.log",
                (
                    "'services.web.ready.log' must be a valid regular expression: "
                    "missing ), unterminated subpattern at position 0 (got '(')"
                ),
            )
        ],
    ),
    "ready-timeout-zero": (
        W + "ready = { notify = true, timeout = 0 }",
        [
            (
                3,
                "services.web.ready.timeout",
                "'services.web.ready.timeout' must be positive (got 0)",
            )
        ],
    ),
    "health-notify": (
        W + "health = { notify = true }",
        [
            (
                3,
                "services.web.health.notify",
                (
                    "'services.web.health.notify' is not allowed: notify is only a readiness "
                    "probe; use 'tcp', 'exec' or 'log' for health"
                ),
            ),
            (3, "services.web.health", f"'services.web.health' {ONE_HEALTH} (got none)"),
        ],
    ),
    "health-retries-zero": (
        W + 'health = { exec = "true", retries = 0 }',
        [
            (
                3,
                "services.web.health.retries",
                "'services.web.health.retries' must be positive (got 0)",
            )
        ],
    ),
    "health-interval-zero": (
        W + 'health = { exec = "true", interval = "0s" }',
        [
            (
                3,
                "services.web.health.interval",
                "'services.web.health.interval' must be positive (got '0s')",
            )
        ],
    ),
    # --- mounts ----------------------------------------------------------------------------
    "mount-type": (
        W + 'mounts = [{ type = "overlay", target = "/x" }]',
        [
            (
                3,
                "services.web.mounts[0].type",
                (
                    "'services.web.mounts[0].type' must be one of 'bind', 'tmpfs', 'proc' "
                    "(got 'overlay')"
                ),
            )
        ],
    ),
    "mount-bind-no-source": (
        W + 'mounts = [{ type = "bind", target = "/x" }]',
        [
            (
                3,
                "services.web.mounts[0]",
                "'services.web.mounts[0]' is a bind mount and needs a 'source'",
            )
        ],
    ),
    "mount-tmpfs-source": (
        W + 'mounts = [{ type = "tmpfs", target = "/x", source = "/y" }]',
        [
            (
                3,
                "services.web.mounts[0].source",
                "'services.web.mounts[0].source' is only for bind mounts (this is tmpfs)",
            )
        ],
    ),
    "mount-mode": (
        W + 'mounts = [{ type = "tmpfs", target = "/x", mode = "999" }]',
        [
            (
                3,
                "services.web.mounts[0].mode",
                (
                    "'services.web.mounts[0].mode' must be a file mode: an octal string such as "
                    "'0755' or an integer from 0 to 4095 (got '999')"
                ),
            )
        ],
    ),
    "mount-size-unit": (
        W + 'mounts = [{ type = "tmpfs", target = "/x", size = "1GB" }]',
        [
            (
                3,
                "services.web.mounts[0].size",
                f"'services.web.mounts[0].size' must be {SIZE} (got '1GB')",
            )
        ],
    ),
    "mount-no-target": (
        W + 'mounts = [{ type = "proc" }]',
        [
            (
                3,
                "services.web.mounts[0]",
                "'services.web.mounts[0]' is missing the required key 'target'",
            )
        ],
    ),
    "mounts-not-list": (
        W + "mounts = {}",
        [(3, "services.web.mounts", "'services.web.mounts' must be a list of tables (got {})")],
    ),
    "mount-on-its-line": (
        W + 'mounts = [\n  { type = "tmpfs", target = "/tmp" },\n\n'
        '  # data\n  { type = "bind", target = "data", source = "/srv" },\n]',
        [
            (
                7,
                "services.web.mounts[1].target",
                "'services.web.mounts[1].target' must be an absolute path (got 'data')",
            )
        ],
    ),
    "mount-array-of-tables": (
        W + '[[services.web.mounts]]\ntype = "tmpfs"\ntarget = "/tmp"\n'
        '[[services.web.mounts]]\ntype = "tmpfs"\ntarget = "/x"\nsize = 0',
        [
            (
                9,
                "services.web.mounts[1].size",
                "'services.web.mounts[1].size' must be positive (got 0)",
            )
        ],
    ),
    "mount-target-dotdot": (
        W + 'mounts = [{ type = "tmpfs", target = "/srv/../etc" }]',
        [
            (
                3,
                "services.web.mounts[0].target",
                (
                    "'services.web.mounts[0].target' must not have a '..' component, which could "
                    "lead outside (got '/srv/../etc')"
                ),
            )
        ],
    ),
    "tmpfs-size-negative": (
        W + 'mounts = [{ type = "tmpfs", target = "/tmp", size = -1 }]',
        [
            (
                3,
                "services.web.mounts[0].size",
                "'services.web.mounts[0].size' must be positive (got -1)",
            )
        ],
    ),
    # --- hardening -------------------------------------------------------------------------
    "rootfs-relative": (
        W + 'rootfs = "images/alpine"',
        [
            (
                3,
                "services.web.rootfs",
                "'services.web.rootfs' must be an absolute path (got 'images/alpine')",
            )
        ],
    ),
    "rootfs-without-mount": (
        W + 'namespaces = ["pid"]\nrootfs = "/srv/root"',
        [
            (
                4,
                "services.web.rootfs",
                (
                    "'services.web.rootfs' needs the 'mount' namespace, which "
                    "'services.web.namespaces' does not include"
                ),
            )
        ],
    ),
    "user-negative": (
        W + "user = -1",
        [(3, "services.web.user", f"'services.web.user' must be {ID_OR_NAME} (got -1)")],
    ),
    "group-too-large": (
        W + "group = 4294967295",
        [(3, "services.web.group", f"'services.web.group' must be {ID_OR_NAME} (got 4294967295)")],
    ),
    "user-bad-name": (
        W + 'user = "www:data"',
        [(3, "services.web.user", f"'services.web.user' must be {ID_OR_NAME} (got 'www:data')")],
    ),
    "groups-not-a-list": (
        W + 'groups = "adm"',
        [
            (
                3,
                "services.web.groups",
                "'services.web.groups' must be a list of group names or numbers (got 'adm')",
            )
        ],
    ),
    "groups-bad-item": (
        W + 'groups = ["adm", true]',
        [
            (
                3,
                "services.web.groups[1]",
                f"'services.web.groups[1]' must be {ID_OR_NAME} (got true)",
            )
        ],
    ),
    "umask-not-octal": (
        W + 'umask = "0888"',
        [
            (
                3,
                "services.web.umask",
                f"'services.web.umask' must be {UMASK} (got '0888')",
            )
        ],
    ),
    "umask-too-large": (
        W + 'umask = "1777"',
        [
            (
                3,
                "services.web.umask",
                f"'services.web.umask' must be {UMASK} (got '1777')",
            )
        ],
    ),
    "env-file-relative": (
        W + 'env_file = ["/etc/a.env", "b.env"]',
        [
            (
                3,
                "services.web.env_file[1]",
                "'services.web.env_file[1]' must be an absolute path (got 'b.env')",
            )
        ],
    ),
    "env-file-number": (
        W + "env_file = 1",
        [
            (
                3,
                "services.web.env_file",
                "'services.web.env_file' must be an absolute path or a list of them (got 1)",
            )
        ],
    ),
    "env-inherit-string": (
        W + 'env_inherit = "no"',
        [
            (
                3,
                "services.web.env_inherit",
                "'services.web.env_inherit' must be true or false (got 'no')",
            )
        ],
    ),
    "capabilities-unknown": (
        W + 'capabilities = ["net_bind_service", "cap_fly"]',
        [
            (
                3,
                "services.web.capabilities",
                (
                    "'services.web.capabilities' has unknown capability 'cap_fly'; use names such "
                    "as 'CAP_NET_BIND_SERVICE' or 'net_bind_service' (see capabilities(7))"
                ),
            )
        ],
    ),
    "capabilities-string": (
        W + 'capabilities = "net_admin"',
        [
            (
                3,
                "services.web.capabilities",
                "'services.web.capabilities' must be a list of capability names (got 'net_admin')",
            )
        ],
    ),
    "no-new-privs-type": (
        W + 'no_new_privs = "yes"',
        [
            (
                3,
                "services.web.no_new_privs",
                "'services.web.no_new_privs' must be true or false (got 'yes')",
            )
        ],
    ),
    "limits-unknown-rlimit": (
        W + "limits = { cpu_time = 10 }",
        [
            (
                3,
                "services.web.limits.cpu_time",
                "'services.web.limits.cpu_time' is not a known key; did you mean 'cputime'?",
            )
        ],
    ),
    "limits-memory-negative": (
        W + "limits = { memory = -5 }",
        [
            (
                3,
                "services.web.limits.memory",
                "'services.web.limits.memory' must be positive (got -5)",
            )
        ],
    ),
}


def issues_of(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    for issue in info.value.errors:
        assert str(path) == issue.source
    return [(issue.line, issue.key, issue.message) for issue in info.value.errors]


def test_corpus_is_large():
    assert len(CASES) >= 50


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_invalid_policy(tmp_path, text, expected):
    """The policy gives exactly these issues: line, dotted key and message."""
    assert expected == issues_of(tmp_path, text)


def test_every_error_is_collected(tmp_path):
    """Problems in different tables and services are all reported, in line order."""
    text = (
        '[supervisor]\nstrategy = "x"\n'
        '[services.a]\ncommand = "x"\nrestart = "x"\n'
        "[services.b]\ncommand = []\ninit = 1\n"
    )
    assert [line for line, _, _ in issues_of(tmp_path, text)] == [2, 5, 7, 8]


def test_defaults_problem_reported_once(tmp_path):
    """A bad value in [defaults] is one issue at defaults.KEY, not one per service."""
    text = '[defaults]\nrestart = "x"\n' + W + '[services.db]\ncommand = "x"\n'
    assert [(line, key) for line, key, _ in issues_of(tmp_path, text)] == [(2, "defaults.restart")]


def test_service_value_overrides_bad_default(tmp_path):
    """Each service gets the defaults' value only where it has none of its own."""
    text = '[defaults]\nrestart = "x"\n' + W + 'restart = "always"\n'
    assert [(line, key) for line, key, _ in issues_of(tmp_path, text)] == [(2, "defaults.restart")]


def test_invalid_utf8(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_bytes(b'[services.web]\ncommand = "\xff"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.errors
    assert (
        issue.line,
        issue.key,
        issue.message,
    ) == (2, "", "the policy is not valid UTF-8 text: invalid start byte")


def test_missing_file_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.toml")


def test_policy_error_shape(tmp_path):
    """PolicyError is an NsupError and a ValueError; str() has one line per issue."""
    path = tmp_path / "policy.toml"
    path.write_text(W + 'restart = "sometimes"\ninit = "no"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert isinstance(info.value, NsupError)
    assert isinstance(info.value, ValueError)
    assert [
        (
            f"{path}:3: 'services.web.restart' must be one of 'always', 'on-failure', 'never' "
            "(got 'sometimes')"
        ),
        f"{path}:4: 'services.web.init' must be true or false (got 'no')",
    ] == str(info.value).splitlines()
