"""Tests for the policy model: valid policies, defaults, round trips, expansion, fuzzing."""

from __future__ import annotations

import json
import re
import resource
import signal
import tempfile
import tomllib
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsup._clone.namespaces import DEFAULT_NAMESPACES
from nsup._errors import PolicyError
from nsup._mount import Mount
from nsup._policy import (
    Backoff,
    HealthProbe,
    Limits,
    Policy,
    PolicyIssue,
    Probe,
    Service,
    ServiceInstance,
    Stop,
    SupervisorConfig,
    load_policy,
)
from nsup._policy.lines import key_lines, line_of
from nsup._policy.schema import SERVICE_FIELDS, SUPERVISOR_FIELDS
from nsup._policy.validate import duration, one_of

POLICIES = Path(__file__).parent / "policies"
SPEC_EXAMPLE = (POLICIES / "spec-example.toml").read_text()

VALID = {
    "spec-example": tomllib.loads(SPEC_EXAMPLE),
    "minimal": {"services": {"a": {"command": "sleep 1"}}},
    "hardened": {
        "services": {
            "a": {
                "command": "sleep 1",
                "rootfs": "/srv/root",
                "user": 1000,
                "group": 1000,
                "capabilities": ["net_bind_service", "CAP_KILL"],
                "no_new_privs": True,
                "limits": {"memory": "64M", "pids": 16, "cpu": 0.2, "nofile": 64},
                "mounts": [{"type": "proc", "target": "/proc"}],
            }
        }
    },
    "identity": {
        "services": {
            "a": {
                "command": "sleep 1",
                "user": "www-data",
                "group": "1000",
                "groups": ["adm", 4],
                "umask": "027",
                "env_file": "/etc/a.env",
                "env_inherit": False,
            }
        }
    },
    "everything": {
        "supervisor": {
            "strategy": "rest_for_one",
            "max_restarts": 0,
            "within": 5,
            "health": "[::1]:9100",
        },
        "defaults": {"restart": "always", "env": {"A": "1"}, "limits": {"nofile": "unlimited"}},
        "services": {
            "a": {
                "command": ["sh", "-c", "echo 'hi there'"],
                "namespaces": ["user", "pid", "mount", "net", "uts", "ipc", "cgroup"],
                "uid_map": [[0, 1000, 1]],
                "gid_map": [[0, 1000, 1], [1, 100000, 65536]],
                "ready": {"notify": True},
                "stop": {"signal": "INT", "timeout": 0},
                "limits": {
                    "core": 0,
                    "cputime": "1m30s",
                    "rttime": "1500ms",
                    "stack": "8M",
                    "nice": 10,
                },
                "mounts": [{"type": "tmpfs", "target": "/scratch", "size": "64M", "mode": "1777"}],
                "stdout": "/var/log/a.log",
                "stderr": "null",
            },
            "b.x@1": {
                "command": "b",
                "depends_on": ["a"],
                "instances": 3,
                "health": {"log": "^ok$", "interval": "1s", "retries": 1},
                "ready": {"exec": "test -e /run/b", "timeout": "1h"},
                "hostname": "b",
                "stop": {"signal": 2},
                "backoff": {"initial": 0, "max": "0.5s", "factor": 1, "jitter": 0},
            },
        },
    },
}


class TestValid:
    def test_spec_example(self, tmp_path):
        """The example from the spec loads with every value typed."""
        path = tmp_path / "policy.toml"
        path.write_text(SPEC_EXAMPLE)
        policy = load_policy(path)
        assert str(path) == policy.source
        assert (
            SupervisorConfig("one_for_one", 10, 60.0, "/run/nsup/app.sock", None)
            == policy.supervisor
        )
        assert list(policy.services) == ["db", "web"]
        db = policy.services["db"]
        assert db.command == ("postgres", "-D", "/var/lib/pg")
        assert Probe(kind="tcp", tcp=("127.0.0.1", 5432), timeout=30.0) == db.ready
        assert db.namespaces == DEFAULT_NAMESPACES
        web = policy.services["web"]
        assert {"db": "ready"} == web.depends_on
        assert Backoff(0.1, 30.0, 2.0, 0.1, 60.0) == web.backoff
        assert frozenset({"pid", "mount", "uts", "ipc", "net"}) == web.namespaces
        assert dict(web.env) == {"PORT": "8080"}
        assert Stop(signal.SIGTERM, 10.0) == web.stop
        assert Limits(memory=256 * 2**20, pids=128, cpu=0.5, rlimits={"nofile": 1024}) == web.limits
        assert web.limits.rlimit_items() == ((resource.RLIMIT_NOFILE, 1024),)
        assert (
            HealthProbe(
                kind="exec",
                exec=("curl", "-f", "http://127.0.0.1:8080/"),
                interval=10.0,
                timeout=2.0,
                retries=3,
            )
            == web.health
        )
        assert (
            Mount("tmpfs", "/tmp"),
            Mount("bind", "/data", source="/srv/data", readonly=True),
        ) == web.mounts

    def test_defaults(self):
        """An absent key takes the documented default."""
        policy = Policy.from_dict({"services": {"a": {"command": ["a"]}}})
        assert SupervisorConfig("one_for_one", 10, 60.0, None, None) == policy.supervisor
        assert Service(command=("a",)) == policy.services["a"]
        service = policy.services["a"]
        assert (
            service.restart,
            service.init,
            service.instances,
            service.stdout,
            service.ready,
        ) == ("on-failure", True, 1, "inherit", None)
        assert policy.source == "<dict>"

    def test_defaults_merge_under_services(self):
        """[defaults] fills keys a service leaves out; the service's own value wins whole."""
        policy = Policy.from_dict(
            {
                "defaults": {"restart": "always", "limits": {"pids": 10}, "env": {"A": "1"}},
                "services": {
                    "a": {"command": "a"},
                    "b": {"command": "b", "restart": "never", "limits": {"memory": "1M"}},
                },
            }
        )
        a, b = policy.services["a"], policy.services["b"]
        assert ("always", Limits(pids=10), {"A": "1"}) == (a.restart, a.limits, dict(a.env))
        assert ("never", Limits(memory=2**20), {"A": "1"}) == (b.restart, b.limits, dict(b.env))

    def test_typed_values(self):
        service = Policy.from_dict(VALID["everything"]).services["a"]
        assert service.command == ("sh", "-c", "echo 'hi there'")
        assert service.gid_map == ((0, 1000, 1), (1, 100000, 65536))
        assert Stop(signal.SIGINT, 0.0) == service.stop
        # a's own limits table replaces the one in [defaults] whole.
        assert dict(service.limits.rlimits) == {
            "core": 0,
            "cputime": 90,
            "rttime": 1_500_000,
            "stack": 8 * 2**20,
            "nice": 10,
        }
        assert (Mount("tmpfs", "/scratch", size=64 * 2**20, mode=0o1777),) == service.mounts
        b = Policy.from_dict(VALID["everything"]).services["b.x@1"]
        assert Probe(kind="exec", exec=("test", "-e", "/run/b"), timeout=3600.0) == b.ready
        assert re.compile("^ok$") == b.health.log
        assert b.stop.signal == signal.SIGINT
        assert dict(b.limits.rlimits) == {"nofile": resource.RLIM_INFINITY}

    def test_identity_keys(self):
        a = Policy.from_dict(VALID["identity"]).services["a"]
        assert ("www-data", 1000, ("adm", 4), 0o027) == (a.user, a.group, a.groups, a.umask)
        assert (("/etc/a.env",), False) == (a.env_file, a.env_inherit)
        plain = Policy.from_dict(VALID["minimal"]).services["a"]
        assert (None, None, (), True) == (
            plain.groups,
            plain.umask,
            plain.env_file,
            plain.env_inherit,
        )

    def test_hardening_keys(self):
        a = Policy.from_dict(VALID["hardened"]).services["a"]
        assert (a.rootfs, a.user, a.group, a.no_new_privs) == ("/srv/root", 1000, 1000, True)
        assert frozenset({"CAP_NET_BIND_SERVICE", "CAP_KILL"}) == a.capabilities
        assert Limits(memory=64 * 2**20, pids=16, cpu=0.2, rlimits={"nofile": 64}) == a.limits
        plain = Policy.from_dict(VALID["minimal"]).services["a"]
        assert (
            plain.rootfs,
            plain.user,
            plain.group,
            plain.capabilities,
            plain.no_new_privs,
        ) == (None, None, None, None, None)  # no_new_privs unset: the hardening default decides

    @pytest.mark.parametrize("document", VALID.values(), ids=VALID.keys())
    def test_round_trip(self, document):
        """to_dict() gives data from_dict() turns back into an equal policy."""
        policy = Policy.from_dict(document, source="x.toml")
        again = Policy.from_dict(policy.to_dict(), source="x.toml")
        assert policy == again
        assert policy.to_dict() == again.to_dict()
        json.dumps(policy.to_dict())  # plain data only

    def test_toml_and_dict_agree(self, tmp_path):
        path = tmp_path / "p.toml"
        path.write_text(SPEC_EXAMPLE)
        assert Policy.from_dict(tomllib.loads(SPEC_EXAMPLE), source=str(path)) == load_policy(path)

    def test_load_accepts_str_path(self, tmp_path):
        path = tmp_path / "p.toml"
        path.write_text('[services.a]\ncommand = "a"\n')
        assert str(path) == load_policy(str(path)).source


class TestFrozen:
    @pytest.mark.parametrize(
        ("obj", "field"),
        [
            (SupervisorConfig(), "strategy"),
            (Backoff(), "max"),
            (Stop(), "signal"),
            (Limits(), "memory"),
            (Probe(kind="notify", notify=True), "timeout"),
            (HealthProbe(kind="tcp", tcp=("h", 1)), "retries"),
            (Service(command=("a",)), "command"),
            (Policy.from_dict(VALID["minimal"]), "services"),
            (PolicyIssue("s", "k", 1, "m"), "message"),
            (ServiceInstance("a", "a", 0, Service(command=("a",)), ()), "name"),
        ],
    )
    def test_rejects_mutation(self, obj, field):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(obj, field, None)

    def test_mappings_are_read_only(self):
        policy = Policy.from_dict(VALID["everything"])
        with pytest.raises(TypeError):
            policy.services["new"] = policy.services["a"]  # type: ignore[index]
        with pytest.raises(TypeError):
            policy.services["a"].env["B"] = "2"  # type: ignore[index]
        with pytest.raises(TypeError):
            policy.services["a"].limits.rlimits["nofile"] = 1  # type: ignore[index]

    def test_mapping_copied(self):
        env = {"A": "1"}
        service = Service(command=("a",), env=env)
        env["B"] = "2"
        assert dict(service.env) == {"A": "1"}

    def test_hashable(self):
        policy = Policy.from_dict(VALID["everything"])
        assert hash(policy.services["a"]) == hash(
            Policy.from_dict(VALID["everything"]).services["a"]
        )


class TestExpanded:
    def test_dependency_order_and_instances(self):
        policy = Policy.from_dict(
            {
                "services": {
                    "web": {"command": "w", "depends_on": ["db", "cache"], "instances": 2},
                    "db": {"command": "d"},
                    "cache": {"command": "c", "depends_on": ["db"]},
                    "cron": {"command": "c", "depends_on": ["web"]},
                }
            }
        )
        assert policy.dependency_order() == ("db", "cache", "web", "cron")
        expanded = policy.expanded()
        assert [(i.name, i.service, i.index, i.depends_on) for i in expanded] == [
            ("db", "db", 0, {}),
            ("cache", "cache", 0, {"db": "ready"}),
            ("web.0", "web", 0, {"db": "ready", "cache": "ready"}),
            ("web.1", "web", 1, {"db": "ready", "cache": "ready"}),
            ("cron", "cron", 0, {"web.0": "ready", "web.1": "ready"}),
        ]
        assert policy.services["web"] is expanded[2].spec

    def test_independent_services_keep_written_order(self):
        policy = Policy.from_dict({"services": {n: {"command": "x"} for n in "zyx"}})
        assert policy.dependency_order() == ("z", "y", "x")


class TestLines:
    def test_key_lines(self):
        lines = key_lines(SPEC_EXAMPLE)
        assert lines["supervisor"] == 1
        assert lines["supervisor.within"] == 4
        assert lines["services.db"] == 11
        assert lines["services.db.ready"] == 13
        assert lines["services.web.backoff"] == 19
        assert lines["services.web.mounts[0]"] == 32
        assert lines["services.web.mounts[1]"] == 33

    def test_quoted_and_dotted_keys(self):
        text = '[services."a.b"]\ncommand = "x"\nstop.signal = "INT"\n"env".\'K\' = "v"\n'
        lines = key_lines(text)
        assert lines['services."a.b"'] == 1
        assert lines['services."a.b".stop.signal'] == 3
        assert lines['services."a.b".env.K'] == 4

    def test_strings_do_not_confuse_the_scanner(self):
        text = (
            'a = """\n[not.a.table]\nb = 1\n"""\nc = \'x = [\'\nd = ["]", { e = 1 }]  # ]\nf = 2\n'
        )
        lines = key_lines(text)
        assert lines == {"a": 1, "c": 5, "d": 6, "d[0]": 6, "d[1]": 6, "f": 7}

    def test_line_of_falls_back_to_parent(self):
        lines = {"services.web": 3, "services.web.mounts": 7}
        assert line_of(lines, "services.web.mounts[2].target") == 7
        assert line_of(lines, "services.web.stop.signal") == 3
        assert line_of(lines, "supervisor.strategy") is None


# --- fuzzing ---------------------------------------------------------------------------

KNOWN_WORDS = [
    *SERVICE_FIELDS,
    *SUPERVISOR_FIELDS,
    "notify", "tcp", "exec", "log", "timeout", "interval", "retries", "initial", "max",
    "factor", "jitter", "reset_after", "signal", "memory", "pids", "cpu", "nofile", "core",
    "type", "target", "source", "readonly", "size", "mode", "cputime", "rttime", "nice",
]  # fmt: skip
INTERESTING = [
    "5s", "0s", "250ms", "-1s", "256M", "0", "1G", "SIGTERM", "TERM", "SIGFOO", "pid", "mount",
    "uts", "user", "always", "never", "on-failure", "/scratch", "relative", "127.0.0.1:80", "h:0",
    "[::1]:1", "unlimited", "0755", "tmpfs", "bind", "proc", "(", ".*", "a", "a.0", "a.1", "",
    "sh -c 'x", "one_for_all",
]  # fmt: skip
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=3),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(INTERESTING),
)
keys = st.one_of(
    st.sampled_from(KNOWN_WORDS), st.sampled_from(["a", "b", "a.0"]), st.text(max_size=6)
)


def tables(values):
    return st.dictionaries(keys, values, max_size=5)


values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | tables(inner), max_leaves=12
)
services = st.dictionaries(
    st.sampled_from(["a", "b", "a.0", "a.1", "we b"]) | st.text(max_size=4),
    tables(values),
    max_size=4,
)
documents = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "supervisor": tables(values),
            "defaults": tables(values),
            "services": services,
            "other": values,
        },
    ),
    values,
)


def check_outcome(load):
    try:
        policy = load()
    except PolicyError as exc:
        errors = exc.errors
    else:
        errors = None
    if errors is not None:
        assert errors
        for issue in errors:
            assert isinstance(issue, PolicyIssue)
            assert isinstance(issue.key, str)
            assert isinstance(issue.message, str)
            assert "\n" not in issue.message
        return
    assert isinstance(policy, Policy)
    assert policy.services
    assert len(policy.expanded()) >= len(policy.services)
    assert policy == Policy.from_dict(policy.to_dict(), source=policy.source)


@given(documents)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_from_dict_returns_policy_or_policy_error(document):
    """Any TOML-shaped data gives a Policy or a PolicyError, never another exception."""
    check_outcome(lambda: Policy.from_dict(document))


def to_toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(to_toml_value, value)) + "]"
    items = (f"{json.dumps(k, ensure_ascii=False)} = {to_toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def to_toml(document):
    lines = []
    for name, table in document.items():
        if isinstance(table, dict) and all(isinstance(t, dict) for t in table.values()):
            for sub, body in table.items():
                lines.append(f"[{json.dumps(name)}.{json.dumps(sub, ensure_ascii=False)}]")
                lines.extend(
                    f"{json.dumps(k, ensure_ascii=False)} = {to_toml_value(v)}"
                    for k, v in body.items()
                )
        else:
            lines.append(f"{json.dumps(name)} = {to_toml_value(table)}")
    return "\n".join(lines) + "\n"


@given(
    st.fixed_dictionaries(
        {"services": services}, optional={"supervisor": tables(values), "defaults": tables(values)}
    )
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_load_policy_returns_policy_or_policy_error(document):
    """TOML text, valid or not, gives a Policy or a PolicyError from the file loader too."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(to_toml(document), encoding="utf-8", errors="surrogatepass")
        check_outcome(lambda: load_policy(path))


@given(st.text())
def test_key_lines_never_raises(text):
    lines = key_lines(text)
    assert all(line >= 1 for line in lines.values())


GOOD_VALUES = {
    "command": ["a", ["a", "b c"]],
    "restart": ["always", "never", "on-failure"],
    "backoff": [{}, {"initial": "1s", "max": "1m"}, {"factor": 1.5, "jitter": 0.5}],
    "namespaces": [[], ["pid"], ["pid", "mount", "uts"], ["user", "net"]],
    "init": [True, False],
    "hostname": ["h"],
    "env": [{}, {"A": "b"}],
    "cwd": ["/", "/srv"],
    "stop": [{"signal": "HUP"}, {"timeout": 0}, {"signal": 9, "timeout": "1m"}],
    "limits": [{"memory": "1G", "nofile": 10}, {"cpu": 1.5, "as": "unlimited"}],
    "ready": [{"notify": True}, {"tcp": "h:1"}, {"log": "x+", "timeout": 1}],
    "health": [{"exec": "true"}, {"tcp": "[::1]:2", "retries": 5}],
    "instances": [1, 2, 3],
    "stdout": ["null", "/x"],
    "mounts": [[{"type": "proc", "target": "/proc"}]],
    "uid_map": [[[0, 0, 1]]],
    "depends_on": [["a"], ["b"], ["a", "b"]],
}
good_service = st.fixed_dictionaries(
    {"command": st.sampled_from(GOOD_VALUES["command"])},
    optional={k: st.sampled_from(v) for k, v in GOOD_VALUES.items() if k != "command"},
)


@given(
    st.fixed_dictionaries(
        {
            "services": st.dictionaries(
                st.sampled_from(["a", "b", "c", "b.1"]), good_service, min_size=1
            )
        },
        optional={
            "defaults": good_service.map(lambda d: {k: v for k, v in d.items() if k != "command"})
        },
    )
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mostly_valid_documents(document):
    """Near-valid documents reach the model, expansion and the round trip, or a PolicyError."""
    check_outcome(lambda: Policy.from_dict(document))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(to_toml(document))
        check_outcome(lambda: load_policy(path))


def test_hand_built_cycle_is_value_error():
    a = Service(command=("a",), depends_on=("b",))
    b = Service(command=("b",), depends_on=("a",))
    policy = Policy(SupervisorConfig(), {"a": a, "b": b, "c": Service(command=("c",))})
    with pytest.raises(
        ValueError, match=r"^services 'a', 'b' depend on a cycle or on unknown services$"
    ):
        policy.dependency_order()


def test_validators_have_readable_repr_and_hash():
    assert repr(one_of("a", "b")) == "_OneOfValidator(choices=('a', 'b'))"
    assert repr(duration(positive=False)) == "_DurationValidator(positive=False)"
    assert hash(one_of("a")) == hash(one_of("a"))
