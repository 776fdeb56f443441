"""Tests for ``nsup check POLICY`` (nsup._cli.check)."""

from __future__ import annotations

import argparse
import json

import pytest

from nsup._cli import check as _cmd_check

POLICY = """\
[services.db]
command = ["ls", "-l", "/var/lib/pg"]  # on every PATH: check looks
namespaces = []

[services.web]
command = "python3 -m http.server 'my dir'"
depends_on = ["db"]
restart = "always"
instances = 2
"""

INVALID = """\
[services.web]
command = "x"
restart = "sometimes"
init = 1
"""


def check(*argv):
    parser = argparse.ArgumentParser(prog="nsup")
    _cmd_check.register(parser.add_subparsers())
    args = parser.parse_args(["check", *argv])
    return args.func(args)


@pytest.fixture
def policy_file(tmp_path):
    def write(text):
        path = tmp_path / "policy.toml"
        path.write_text(text)
        return str(path)

    return write


def test_valid_prints_one_line_per_service(policy_file, capsys):
    assert check(policy_file(POLICY)) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "db: ls -l /var/lib/pg [restart=on-failure namespaces=none depends_on=none]",
        (
            "web x2: python3 -m http.server 'my dir' "
            "[restart=always namespaces=ipc,mount,pid,uts depends_on=db]"
        ),
    ]
    assert err == ""


def test_invalid_prints_every_error_and_exits_2(policy_file, capsys):
    path = policy_file(INVALID)
    assert check(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        (
            f"nsup: {path}:3: 'services.web.restart' must be one of 'always', 'on-failure', "
            "'never' (got 'sometimes')"
        ),
        f"nsup: {path}:4: 'services.web.init' must be true or false (got 1)",
    ]


def test_json_valid(policy_file, capsys):
    path = policy_file(POLICY)
    assert check("--json", path) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {
        "valid": True,
        "source": path,
        "services": [
            {
                "name": "db",
                "command": ["ls", "-l", "/var/lib/pg"],
                "restart": "on-failure",
                "namespaces": [],
                "depends_on": [],
                "instances": 1,
            },
            {
                "name": "web",
                "command": ["python3", "-m", "http.server", "my dir"],
                "restart": "always",
                "namespaces": ["ipc", "mount", "pid", "uts"],
                "depends_on": ["db"],
                "instances": 2,
            },
        ],
        "warnings": [],
    }


def test_json_invalid(policy_file, capsys):
    path = policy_file(INVALID)
    assert check("--json", path) == 2
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {
        "valid": False,
        "source": path,
        "errors": [
            {
                "source": path,
                "line": 3,
                "key": "services.web.restart",
                "message": "'services.web.restart' must be one of 'always', 'on-failure', "
                "'never' (got 'sometimes')",
            },
            {
                "source": path,
                "line": 4,
                "key": "services.web.init",
                "message": "'services.web.init' must be true or false (got 1)",
            },
        ],
        "warnings": [],
    }


def test_syntax_error(policy_file, capsys):
    path = policy_file("[services.web\n")
    assert check(path) == 2
    assert capsys.readouterr().err == (
        f"nsup: {path}:1: invalid TOML: Expected ']' at the end of a table declaration "
        "(column 14)\n"
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_missing_file(tmp_path, capsys, as_json):
    path = str(tmp_path / "missing.toml")
    assert check(*(["--json"] if as_json else []), path) == 2
    out, err = capsys.readouterr()
    message = f"cannot read {path!r}: No such file or directory"
    if as_json:
        assert json.loads(out) == {
            "valid": False,
            "source": path,
            "errors": [{"source": path, "line": None, "key": "", "message": message}],
            "warnings": [],
        }
    else:
        assert err == f"nsup: {message}\n"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ('["echo", "plain"]', "echo plain"),
        ('["echo", "two words"]', "echo 'two words'"),
        ('["sh", "-c", "echo \'hi\'; exit 3"]', "sh -c \"echo 'hi'; exit 3\""),
        ('["sh", "-c", "echo \'hi\' $HOME"]', '["sh", "-c", "echo \'hi\' $HOME"]'),
    ],
)
def test_commands_are_shown_as_a_reader_types_them(policy_file, capsys, command, shown):
    assert check(policy_file(f"[services.a]\ncommand = {command}\nnamespaces = []\n")) == 0
    assert capsys.readouterr().out == (
        f"a: {shown} [restart=on-failure namespaces=none depends_on=none]\n"
    )
