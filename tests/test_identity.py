"""User, group, supplementary groups and umask: name resolution, and what a service really gets."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import stat

import pytest
from helpers import PYTHON, nsup_exec, run, run_once

from nsup import Policy, ProcessSpec, SpecError
from nsup._cli import check as _cmd_check
from nsup._engine import prepare as _prepare
from nsup._policy.identity import Identity, Unresolved, resolve_identity

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

USERS = """\
root:x:0:0:root:/root:/bin/sh
# a comment, and a NIS line below
+::::::
svc:x:4242:4343:a service:/home/svc:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
broken line
"""
GROUPS = """\
root:x:0:
svcgrp:x:4343:
extra:x:4444:other,svc
unrelated:x:4445:other
"""


@pytest.fixture
def rootfs(tmp_path):
    """A root file system with its own user database, and the host's programs (bound /usr)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{name}"):
            (root / name).symlink_to(os.readlink(f"/{name}"))
    (root / "etc" / "passwd").write_text(USERS)
    (root / "etc" / "group").write_text(GROUPS)
    (root / "out").mkdir(mode=0o777)
    return root


def service(**keys):
    namespaces = {"namespaces": ["pid", "mount"]} if "rootfs" in keys else {}
    return Policy.from_dict({"services": {"web": {"command": "x", **namespaces, **keys}}}).services[
        "web"
    ]


def resolve(**keys):
    return resolve_identity(service(**keys), "services.web")


# --- resolution -------------------------------------------------------------------


def test_nothing_set_changes_nothing():
    assert Identity() == resolve()


def test_host_names():
    """``nobody`` and ``nogroup`` from the host's database, as ``id nobody`` sees them."""
    entry = pwd.getpwnam("nobody")
    expected_groups = tuple(dict.fromkeys(os.getgrouplist("nobody", entry.pw_gid)))
    assert Identity(entry.pw_uid, entry.pw_gid, expected_groups, "nobody", entry.pw_dir) == resolve(
        user="nobody"
    )
    assert Identity(None, 65534, (65534,)) == resolve(group="nogroup")
    assert Identity(entry.pw_uid, 0, (65534, 0), "nobody", entry.pw_dir) == resolve(
        user="nobody", group="root", groups=["nogroup", "0"]
    )


def test_numbers():
    """A number is used as is; an unknown uid keeps the group and has no supplementary groups."""
    assert Identity(4000000, None, ()) == resolve(user=4000000)
    assert Identity(4000000, 7, ()) == resolve(user="4000000", group=7)
    entry = pwd.getpwnam("nobody")
    assert "nobody" == resolve(user=entry.pw_uid).name


def test_rootfs_names_come_from_its_files(rootfs):
    """The rootfs's /etc/passwd and /etc/group, not the host's; initgroups adds member groups."""
    assert Identity(4242, 4343, (4343, 4444), "svc", "/home/svc") == resolve(
        user="svc", rootfs=str(rootfs)
    )
    assert Identity(4242, 4444, (4445,), "svc", "/home/svc") == resolve(
        user="svc", group="extra", groups=["unrelated"], rootfs=str(rootfs)
    )
    assert Identity(4242, 4343, (), "svc", "/home/svc") == resolve(
        user=4242, groups=[], rootfs=str(rootfs)
    )


@pytest.mark.parametrize(
    ("keys", "key", "message"),
    [
        (
            {"user": "no-such-user"},
            "services.web.user",
            "'services.web.user' names 'no-such-user', which is not a user in the host's user database",
        ),
        (
            {"user": "nobody", "group": "no-such-group"},
            "services.web.group",
            "'services.web.group' names 'no-such-group', which is not a group in the host's group database",
        ),
        (
            {"groups": ["nogroup", "no-such-group"]},
            "services.web.groups[1]",
            "'services.web.groups[1]' names 'no-such-group', which is not a group in the host's group database",
        ),
    ],
)
def test_unknown_names_on_the_host(keys, key, message):
    with pytest.raises(Unresolved) as info:
        resolve(**keys)
    assert (key, message) == (info.value.key, info.value.message)


def test_unknown_names_in_a_rootfs(rootfs):
    """``root`` is in the host's database but the rootfs decides: ``www-data`` is not there."""
    with pytest.raises(Unresolved) as info:
        resolve(user="www-data", rootfs=str(rootfs))
    assert (
        f"'services.web.user' names 'www-data', which is not a user in {rootfs}/etc/passwd"
        == info.value.message
    )
    with pytest.raises(Unresolved) as info:
        resolve(user="svc", groups=["nogroup"], rootfs=str(rootfs))
    assert (
        f"'services.web.groups[0]' names 'nogroup', which is not a group in {rootfs}/etc/group"
        == info.value.message
    )
    (rootfs / "etc" / "passwd").unlink()
    with pytest.raises(Unresolved) as info:
        resolve(user="svc", rootfs=str(rootfs))
    assert "services.web.user" == info.value.key


# --- nsup check ----------------------------------------------------------------------


def check(*argv):
    parser = argparse.ArgumentParser(prog="nsup")
    _cmd_check.register(parser.add_subparsers())
    args = parser.parse_args(["check", *argv])
    return args.func(args)


def test_check_reports_unknown_names_and_env_files_with_their_lines(tmp_path, capsys):
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("A=1\nnot a line\n")
    path = tmp_path / "policy.toml"
    path.write_text(
        f"""\
[defaults]
user = "no-such-user"

[services.a]
command = "true"
group = "no-such-group"

[services.b]
command = "true"
user = "nobody"
groups = ["nogroup", "no-such-group"]
env_file = ["{tmp_path}/missing.env", "{bad_env}"]
"""
    )
    assert check(str(path), "--json") == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert [
        (
            2,
            "services.a.user",
            "'services.a.user' names 'no-such-user', which is not a user in the host's user database",
        ),
        (
            6,
            "services.a.group",
            "'services.a.group' names 'no-such-group', which is not a group in the host's group database",
        ),
        (
            11,
            "services.b.groups[1]",
            "'services.b.groups[1]' names 'no-such-group', which is not a group in the host's group database",
        ),
        (
            12,
            "services.b.env_file[0]",
            f"'services.b.env_file[0]' names '{tmp_path}/missing.env', which cannot be read: No such file or directory",
        ),
        (
            12,
            "services.b.env_file[1]",
            f"'services.b.env_file[1]': {bad_env}:2: expected KEY=VALUE (got 'not a line')",
        ),
    ] == [(e["line"], e["key"], e["message"]) for e in errors]
    path.write_text('[services.a]\ncommand = "true"\nuser = "nobody"\ngroup = "nogroup"\n')
    assert check(str(path)) == 0


# --- for real ---------------------------------------------------------------------


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


SHOW = "cat /proc/self/status; echo HOME=$HOME; echo USER=$USER"


@root_only
async def test_host_user_and_supplementary_groups(tmp_path):
    """``nobody`` by name, with explicit groups: /proc/self/status shows every id."""
    out = tmp_path / "out"
    await run_once(
        {
            "services": {
                "web": {
                    "command": ["sh", "-c", SHOW],
                    "restart": "never",
                    "user": "nobody",
                    "groups": ["nogroup", "adm", 4444],
                    "stdout": str(out),
                }
            }
        }
    )
    fields = status_fields(out.read_text())
    adm = __import__("grp").getgrnam("adm").gr_gid
    assert ["65534"] * 4 == fields["Uid"].split()
    assert ["65534"] * 4 == fields["Gid"].split()
    assert sorted([65534, adm, 4444]) == sorted(map(int, fields["Groups"].split()))
    assert "HOME=/nonexistent\nUSER=nobody\n" in out.read_text()


@root_only
async def test_rootfs_user_from_its_own_passwd(rootfs, tmp_path):
    """A user that exists only inside the rootfs: its uid, primary group and member groups."""
    out = tmp_path / "out"
    await run_once(
        {
            "services": {
                "web": {
                    "command": ["sh", "-c", SHOW],
                    "restart": "never",
                    "namespaces": ["pid", "mount"],
                    "rootfs": str(rootfs),
                    "mounts": [
                        {"type": "bind", "source": "/usr", "target": "/usr", "readonly": True}
                    ],
                    "user": "svc",
                    "stdout": str(out),
                }
            }
        }
    )
    fields = status_fields(out.read_text())
    assert ["4242"] * 4 == fields["Uid"].split()
    assert ["4343"] * 4 == fields["Gid"].split()
    assert ["4343", "4444"] == fields["Groups"].split()
    assert "HOME=/home/svc\nUSER=svc\n" in out.read_text()


async def test_umask_is_seen_by_a_file_the_service_creates(tmp_path):
    created = tmp_path / "created"
    await run_once(
        {
            "services": {
                "web": {
                    "command": [
                        PYTHON,
                        "-I",
                        "-S",
                        "-c",
                        f"open({str(created)!r}, 'w').close(); import os; os.mkdir({str(created)!r} + '.d')",
                    ],
                    "restart": "never",
                    "namespaces": [],
                    "umask": "027",
                }
            }
        }
    )
    assert 0o640 == stat.S_IMODE(created.stat().st_mode)
    assert 0o750 == stat.S_IMODE(os.stat(f"{created}.d").st_mode)


async def test_environment_for_real(tmp_path, monkeypatch):
    """env_inherit = false keeps nsup's secret out; env files and env arrive, in order."""
    monkeypatch.setenv("NSUP_TEST_SECRET", "hunter2")
    env_file = tmp_path / "web.env"
    env_file.write_text('export GREETING="hello\\nworld"  # two lines\nPORT=1\n')
    out = tmp_path / "out"
    await run_once(
        {
            "services": {
                "web": {
                    "command": [
                        PYTHON,
                        "-I",
                        "-S",
                        "-c",
                        "import json, os; print(json.dumps(dict(os.environ)))",
                    ],
                    "restart": "never",
                    "namespaces": [],
                    "env_inherit": False,
                    "env_file": str(env_file),
                    "env": {"PORT": "8080", "NSUP_TEST_MARKER": os.environ["NSUP_TEST_MARKER"]},
                    "stdout": str(out),
                }
            }
        }
    )
    env = json.loads(out.read_text())
    assert "NSUP_TEST_SECRET" not in env
    assert "hello\nworld" == env["GREETING"]
    assert "8080" == env["PORT"]
    assert os.environ["PATH"] == env["PATH"]
    expected = {"PATH", "HOME", "USER", "LANG", "TERM"} & set(os.environ)
    expected |= {"GREETING", "PORT", "NSUP_TEST_MARKER", "NSUP_SERVICE", "NSUP_INSTANCE"}
    assert expected == set(env)


async def test_unknown_user_fails_the_start_naming_the_key(tmp_path):
    events = await run_once(
        {
            "services": {
                "web": {"command": "true", "restart": "never", "user": "no-such-user"},
                "env": {
                    "command": "true",
                    "restart": "never",
                    "env_file": str(tmp_path / "none.env"),
                },
            }
        }
    )
    failed = {e.service: e.message for e in events if e.kind == "spawn_failed"}
    assert {
        "web": "'services.web.user' names 'no-such-user', which is not a user in the host's user database",
        "env": f"'services.env.env_file' names '{tmp_path}/none.env', which cannot be read: No such file or directory",
    } == failed


async def test_a_lookup_that_hangs_fails_the_start_within_the_deadline(monkeypatch):
    """A name service that never answers (a blocked lookup) fails the start; nsup goes on."""
    release = __import__("threading").Event()
    real = _prepare.resolve_identity

    def stuck(*args):
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(_prepare, "resolve_identity", stuck)
    monkeypatch.setattr(_prepare, "LOOKUP_TIMEOUT", 0.2)
    try:
        events = await run_once(
            {"services": {"web": {"command": "true", "restart": "never", "user": "nobody"}}}
        )
    finally:
        release.set()
    (failed,) = [e for e in events if e.kind == "spawn_failed"]
    assert (
        "looking up the user, groups and env files of 'services.web' took more than 0.2s; "
        "is the name service (NSS) or the file system answering?"
    ) == failed.message


# --- nsup exec ----------------------------------------------------------------------


@root_only
def test_exec_user_group_umask_env_file(tmp_path):
    env_file = tmp_path / "e.env"
    env_file.write_text("FROM_FILE='a b'\n")
    result = nsup_exec(
        "--user", "nobody", "--group", "nogroup", "--umask", "077", "--env-file", str(env_file),
        "--clear-env", "--env", f"NSUP_TEST_MARKER={os.environ['NSUP_TEST_MARKER']}",
        "--", "sh", "-c", 'id -u; id -g; id -G; umask; echo "$FROM_FILE|$USER|${NSUP_TEST_SECRET-unset}"',
    )  # fmt: skip
    assert 0 == result.returncode, result.stderr
    assert ["65534", "65534", "65534", "0077", "a b|nobody|unset"] == result.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--user", "no-such-user"],
            "nsup exec: --user names 'no-such-user', which is not a user in the host's user database",
        ),
        (
            ["--group", "a:b"],
            "nsup exec: --group must be a name such as 'www-data' or a number from 0 to 4294967294 (got 'a:b')",
        ),
        (
            ["--umask", "8"],
            "nsup exec: --umask must be a umask: an octal string such as '027' or an integer from 0 to 511 (got '8')",
        ),
        (
            ["--env-file", "/no/such.env"],
            "nsup exec: --env-file names '/no/such.env', which cannot be read: No such file or directory",
        ),
    ],
)
def test_exec_flag_errors_name_the_flag(args, message):
    result = nsup_exec(*args, "--", "true")
    assert 2 == result.returncode
    assert message == result.stderr.splitlines()[-1]


# --- the process layer: plain numbers ------------------------------------------------


def test_spec_checks_groups_and_umask():
    with pytest.raises(SpecError) as info:
        ProcessSpec(argv=["true"], groups=["adm"])
    assert "'groups' items must be numeric gids from 0 to 4294967294 (got 'adm')" == str(info.value)
    with pytest.raises(SpecError) as info:
        ProcessSpec(argv=["true"], umask=0o1000)
    assert "'umask' must be an integer from 0 to 0o777, such as 0o027 (got 512)" == str(info.value)
    assert (4, 5) == ProcessSpec(argv=["true"], groups=[4, 5, 4]).groups


@root_only
@pytest.mark.parametrize("init", [True, False])
async def test_spec_groups_and_umask_for_real(init):
    status, out = await run(
        ["sh", "-c", "id -u; id -g; id -G; umask"],
        user=65534,
        group=65533,
        groups=[4444, 65533, 1],
        umask=0o077,
        init=init,
    )
    assert status.success
    uid, gid, groups, umask = out.split("\n")[:4]
    assert ("65534", "65533", "0077") == (uid, gid, umask)
    assert [1, 4444, 65533] == sorted(map(int, groups.split()))
