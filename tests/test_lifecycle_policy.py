"""The lifecycle keys of a policy: ``type``, ``depends_on`` conditions, ``sockets``, ``namespaces_from``.

Each invalid case gives exactly these issues (line, dotted key, message); the
valid ones are read back into the model and through ``to_dict``.
"""

from __future__ import annotations

import socket

import pytest
from test_policy_errors import issues_of

from nsup._policy import Policy, Socket
from nsup._policy.validate import parse_listen

CASES = {
    "type-unknown": (
        '[services.web]\ncommand = "x"\ntype = "one-shot"',
        [
            (
                3,
                "services.web.type",
                "'services.web.type' must be one of 'service', 'oneshot' (got 'one-shot'); did you mean 'oneshot'?",
            )
        ],
    ),
    "condition-unknown": (
        '[services.db]\ncommand = "d"\n[services.web]\ncommand = "x"\ndepends_on = { db = "up" }',
        [
            (
                5,
                "services.web.depends_on.db",
                "'services.web.depends_on.db' must be one of 'started', 'ready', 'healthy', 'completed' (got 'up')",
            )
        ],
    ),
    "condition-not-string": (
        '[services.db]\ncommand = "d"\n[services.web]\ncommand = "x"\ndepends_on = { db = 1 }',
        [
            (
                5,
                "services.web.depends_on.db",
                "'services.web.depends_on.db' must be one of 'started', 'ready', 'healthy', 'completed' (got 1)",
            )
        ],
    ),
    "depends-table-unknown": (
        '[services.db]\ncommand = "d"\n[services.web]\ncommand = "x"\ndepends_on = { dbb = "ready" }',
        [
            (
                5,
                "services.web.depends_on.dbb",
                "'services.web.depends_on.dbb' names 'dbb', which is not a service; did you mean 'db'?",
            )
        ],
    ),
    "completed-needs-oneshot": (
        '[services.db]\ncommand = "d"\n[services.web]\ncommand = "x"\ndepends_on = { db = "completed" }',
        [
            (
                5,
                "services.web.depends_on.db",
                "'services.web.depends_on.db' waits for 'db' to be 'completed', but only a oneshot completes; give 'db' type = \"oneshot\", or wait for \"ready\"",
            )
        ],
    ),
    "healthy-on-oneshot": (
        '[services.migrate]\ncommand = "m"\ntype = "oneshot"\n[services.web]\ncommand = "x"\ndepends_on = { migrate = "healthy" }',
        [
            (
                6,
                "services.web.depends_on.migrate",
                "'services.web.depends_on.migrate' waits for 'migrate' to be 'healthy', but 'migrate' is a oneshot, which has no health; wait for 'completed'",
            )
        ],
    ),
    "healthy-needs-health": (
        '[services.db]\ncommand = "d"\n[services.web]\ncommand = "x"\ndepends_on = { db = "healthy" }',
        [
            (
                5,
                "services.web.depends_on.db",
                "'services.web.depends_on.db' waits for 'db' to be 'healthy', but 'db' has no 'health' probe; add one, or wait for 'ready'",
            )
        ],
    ),
    "oneshot-restart-always": (
        '[services.migrate]\ncommand = "m"\ntype = "oneshot"\nrestart = "always"',
        [
            (
                4,
                "services.migrate.restart",
                "'services.migrate.restart' cannot be 'always' for a oneshot, which would run again after every success; use 'on-failure' (retry until it succeeds) or 'never'",
            )
        ],
    ),
    "oneshot-ready": (
        '[services.migrate]\ncommand = "m"\ntype = "oneshot"\nready = { tcp = "127.0.0.1:1" }',
        [
            (
                4,
                "services.migrate.ready",
                "'services.migrate.ready' is not for a oneshot: a oneshot is ready once it has completed successfully",
            )
        ],
    ),
    "success-codes": (
        '[services.web]\ncommand = "x"\nsuccess_codes = [0, 256, "x"]',
        [
            (
                3,
                "services.web.success_codes[1]",
                "'services.web.success_codes[1]' must be at most 255 (got 256)",
            ),
            (
                3,
                "services.web.success_codes[2]",
                "'services.web.success_codes[2]' must be an integer (got 'x')",
            ),
        ],
    ),
    "sockets-not-list": (
        '[services.web]\ncommand = "x"\nsockets = "127.0.0.1:80"',
        [
            (
                3,
                "services.web.sockets",
                "'services.web.sockets' must be a list of tables (got '127.0.0.1:80')",
            )
        ],
    ),
    "socket-listen-missing": (
        '[services.web]\ncommand = "x"\nsockets = [{ name = "http" }]',
        [
            (
                3,
                "services.web.sockets[0]",
                "'services.web.sockets[0]' is missing the required key 'listen'",
            )
        ],
    ),
    "socket-listen-hostname": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "example.com:80" }]',
        [
            (
                3,
                "services.web.sockets[0].listen",
                "'services.web.sockets[0].listen' must be 'IP:PORT' ('127.0.0.1:8080', '0.0.0.0:80', '[::1]:8080'), an absolute path for a Unix socket, or '@NAME' for an abstract Unix socket (got 'example.com:80'); write an IP address, not a host name",
            )
        ],
    ),
    "socket-listen-port-only": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "8080" }]',
        [
            (
                3,
                "services.web.sockets[0].listen",
                "'services.web.sockets[0].listen' must be 'IP:PORT' ('127.0.0.1:8080', '0.0.0.0:80', '[::1]:8080'), an absolute path for a Unix socket, or '@NAME' for an abstract Unix socket (got '8080')",
            )
        ],
    ),
    "socket-listen-port-range": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:0" }]',
        [
            (
                3,
                "services.web.sockets[0].listen",
                "'services.web.sockets[0].listen' must be 'IP:PORT' ('127.0.0.1:8080', '0.0.0.0:80', '[::1]:8080'), an absolute path for a Unix socket, or '@NAME' for an abstract Unix socket (got '127.0.0.1:0'); the port must be from 1 to 65535",
            )
        ],
    ),
    "socket-path-long": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "/sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss" }]',
        [
            (
                3,
                "services.web.sockets[0].listen",
                "'services.web.sockets[0].listen' must be 'IP:PORT' ('127.0.0.1:8080', '0.0.0.0:80', '[::1]:8080'), an absolute path for a Unix socket, or '@NAME' for an abstract Unix socket (got '/sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss'); a socket path is at most 107 bytes",
            )
        ],
    ),
    "socket-mode-tcp": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:80", mode = "0660" }]',
        [
            (
                3,
                "services.web.sockets[0].mode",
                "'services.web.sockets[0].mode' is only for a Unix socket path (this listens on '127.0.0.1:80')",
            )
        ],
    ),
    "socket-name-colon": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:80", name = "a:b" }]',
        [
            (
                3,
                "services.web.sockets[0].name",
                "'services.web.sockets[0].name' must be 1 to 255 printable ASCII characters without spaces or ':' (it goes in LISTEN_FDNAMES, which ':' separates) (got 'a:b')",
            )
        ],
    ),
    "socket-backlog": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:80", backlog = 0 }]',
        [
            (
                3,
                "services.web.sockets[0].backlog",
                "'services.web.sockets[0].backlog' must be positive (got 0)",
            )
        ],
    ),
    "socket-unknown-key": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:80", type = "udp" }]',
        [
            (
                3,
                "services.web.sockets[0].type",
                "'services.web.sockets[0].type' is not a known key; known keys are 'listen', 'name', 'mode' and 'backlog'",
            )
        ],
    ),
    "socket-duplicate": (
        '[services.web]\ncommand = "x"\nsockets = [{ listen = "127.0.0.1:80" }]\n[services.api]\ncommand = "x"\nsockets = [{ listen = "localhost:80" }]',
        [
            (
                6,
                "services.api.sockets[0].listen",
                "'services.api.sockets[0].listen' listens on 'localhost:80', as 'services.web.sockets[0].listen' already does",
            )
        ],
    ),
    "namespaces-from-unknown": (
        '[services.web]\ncommand = "x"\n[services.side]\ncommand = "s"\nnamespaces_from = "wbe"',
        [
            (
                5,
                "services.side.namespaces_from",
                "'services.side.namespaces_from' names 'wbe', which is not a service; did you mean 'web'?",
            )
        ],
    ),
    "namespaces-from-self": (
        '[services.web]\ncommand = "x"\nnamespaces_from = "web"',
        [
            (
                3,
                "services.web.namespaces_from",
                "'services.web.namespaces_from' names 'web', the service itself; name the service whose namespaces to enter",
            )
        ],
    ),
    "namespaces-from-oneshot": (
        '[services.migrate]\ncommand = "m"\ntype = "oneshot"\n[services.side]\ncommand = "s"\nnamespaces_from = "migrate"',
        [
            (
                6,
                "services.side.namespaces_from",
                "'services.side.namespaces_from' names 'migrate', a oneshot, whose namespaces end when it completes; name a long-running service",
            )
        ],
    ),
    "namespaces-from-instances": (
        '[services.web]\ncommand = "x"\ninstances = 2\n[services.side]\ncommand = "s"\nnamespaces_from = "web"',
        [
            (
                6,
                "services.side.namespaces_from",
                "'services.side.namespaces_from' names 'web', which has 2 instances; name a service with one instance",
            )
        ],
    ),
    "namespaces-from-with-namespaces": (
        '[services.web]\ncommand = "x"\n[services.side]\ncommand = "s"\nnamespaces_from = "web"\nnamespaces = ["net"]',
        [
            (
                6,
                "services.side.namespaces",
                "'services.side.namespaces' cannot be set with 'namespaces_from': the service enters every namespace of 'web' and creates none",
            )
        ],
    ),
    "namespaces-from-with-hostname": (
        '[services.web]\ncommand = "x"\n[services.side]\ncommand = "s"\nnamespaces_from = "web"\nhostname = "x"',
        [
            (
                6,
                "services.side.hostname",
                "'services.side.hostname' cannot be set with 'namespaces_from': the service runs in the namespaces of 'web'; set it on 'web'",
            )
        ],
    ),
    "namespaces-from-cycle": (
        '[services.web]\ncommand = "x"\ndepends_on = ["side"]\n[services.side]\ncommand = "s"\nnamespaces_from = "web"',
        [
            (
                3,
                "services.web.depends_on",
                "'services.web.depends_on' makes a dependency cycle: web -> side -> web",
            )
        ],
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_invalid(tmp_path, text, expected):
    """The policy gives exactly these issues: line, dotted key and message."""
    assert expected == issues_of(tmp_path, text)


LIFECYCLE = {
    "services": {
        "migrate": {"command": "m", "type": "oneshot", "success_codes": [3, 3, 4]},
        "cache": {"command": "c", "health": {"tcp": "127.0.0.1:6379"}},
        "db": {"command": "d"},
        "web": {
            "command": "w",
            "depends_on": {"migrate": "completed", "db": "ready", "cache": "healthy"},
            "sockets": [
                {"listen": "127.0.0.1:8080", "name": "http"},
                {"listen": "/run/app.sock", "mode": "0660", "backlog": 16},
            ],
        },
        "side": {"command": "s", "namespaces_from": "web"},
    }
}


class TestValid:
    def test_model(self):
        """Conditions, oneshot, success codes and sockets land in the model as written."""
        policy = Policy.from_dict(LIFECYCLE)
        migrate, web, side = (policy.services[n] for n in ("migrate", "web", "side"))
        assert ("oneshot", (3, 4)) == (migrate.type, migrate.success_codes)
        assert "service" == web.type
        assert {"migrate": "completed", "db": "ready", "cache": "healthy"} == web.depends_on
        assert (
            Socket("127.0.0.1:8080", name="http"),
            Socket("/run/app.sock", mode=0o660, backlog=16),
        ) == web.sockets
        assert ("web", frozenset()) == (side.namespaces_from, side.namespaces)

    def test_sidecar_starts_after_its_owner(self):
        """namespaces_from orders the start, and the instance waits for the owner to have started."""
        policy = Policy.from_dict(
            {
                "services": {
                    "side": {"command": "s", "namespaces_from": "web"},
                    "web": {"command": "w"},
                    "late": {"command": "l", "namespaces_from": "web", "depends_on": ["web"]},
                }
            }
        )
        assert ("web", "side", "late") == policy.dependency_order()
        waits = {i.name: dict(i.depends_on) for i in policy.expanded()}
        assert {"web": {}, "side": {"web": "started"}, "late": {"web": "ready"}} == waits

    def test_plain_list_means_ready(self):
        policy = Policy.from_dict(
            {"services": {"db": {"command": "d"}, "web": {"command": "w", "depends_on": ["db"]}}}
        )
        assert {"db": "ready"} == policy.services["web"].depends_on

    def test_round_trip(self):
        """to_dict() writes every new key so that from_dict() gives the same policy back."""
        policy = Policy.from_dict(LIFECYCLE)
        data = policy.to_dict()
        assert "namespaces" not in data["services"]["side"]
        assert [{"listen": "127.0.0.1:8080", "name": "http", "backlog": 4096},
                {"listen": "/run/app.sock", "mode": 0o660, "backlog": 16}] == data["services"]["web"]["sockets"]  # fmt: skip
        assert policy == Policy.from_dict(data)

    def test_defaults_namespaces_do_not_stop_a_sidecar(self):
        """[defaults] namespaces apply to the others; the sidecar still creates none."""
        policy = Policy.from_dict(
            {
                "defaults": {"namespaces": ["pid", "net"]},
                "services": {
                    "web": {"command": "w"},
                    "side": {"command": "s", "namespaces_from": "web"},
                },
            }
        )
        assert frozenset() == policy.services["side"].namespaces
        assert frozenset({"pid", "net"}) == policy.services["web"].namespaces


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", (socket.AF_INET, ("127.0.0.1", 8080))),
        ("localhost:80", (socket.AF_INET, ("127.0.0.1", 80))),
        ("0.0.0.0:1", (socket.AF_INET, ("0.0.0.0", 1))),  # noqa: S104 - parsing, not binding
        ("[::1]:65535", (socket.AF_INET6, ("::1", 65535))),
        ("/run/app.sock", (socket.AF_UNIX, "/run/app.sock")),
        ("@nsup-test", (socket.AF_UNIX, "\0nsup-test")),
    ],
)
def test_parse_listen(text, expected):
    assert expected == parse_listen(text)


@pytest.mark.parametrize(
    "text", ["8080", "host:80", "127.0.0.1:65536", "@", "run/app.sock", "[::1]"]
)
def test_parse_listen_refuses(text):
    with pytest.raises(ValueError, match=r".*"):
        parse_listen(text)
