"""Env files and the service environment: every syntax case, every error, and the layers."""

from __future__ import annotations

import pytest

from nsup import Policy
from nsup._policy.environ import (
    DEFAULT_PATH,
    MAX_ENV_FILE,
    EnvFileError,
    parse_env_file,
    read_env_file,
    service_environment,
)
from nsup._policy.identity import Identity, Unresolved

CASES = {
    "plain": ("A=1", {"A": "1"}),
    "empty-value": ("A=", {"A": ""}),
    "equals-in-value": ("URL=postgres://u:p@h/db?x=1", {"URL": "postgres://u:p@h/db?x=1"}),
    "spaces-around": ("  A  =  spaced value  ", {"A": "spaced value"}),
    "comment-lines": ("# c\n; c\n\n   \nA=1\n  # indented", {"A": "1"}),
    "inline-comment": (
        "A=value # note\nB=x#y\nC=tab\t# note",
        {"A": "value", "B": "x#y", "C": "tab"},
    ),
    "export": ("export A=1\nexport  B = 2", {"A": "1", "B": "2"}),
    "export-as-name": ("export=1", {"export": "1"}),
    "later-wins": ("A=1\nA=2", {"A": "2"}),
    "crlf": ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    "single-quotes": (
        "A='  $HOME \\n \"x\" # not a comment '",
        {"A": '  $HOME \\n "x" # not a comment '},
    ),
    "single-multiline": ("A='one\ntwo'\nB=3", {"A": "one\ntwo", "B": "3"}),
    "double-escapes": (
        'A="q\\"uote \\\\ \\$HOME \\` new\\nline tab\\there \\x kept"',
        {"A": 'q"uote \\ $HOME ` new\nline tab\there \\x kept'},
    ),
    "double-multiline": ('A="one\n  two"\nB=3', {"A": "one\n  two", "B": "3"}),
    "double-continuation": ('A="one \\\ntwo"', {"A": "one two"}),
    "comment-after-quote": ("A='x'   # note\nB=\"y\"", {"A": "x", "B": "y"}),
    "dollar-is-literal": ("A=${HOME}:$PATH", {"A": "${HOME}:$PATH"}),
    "unicode": ("GREETING=grüß dich", {"GREETING": "grüß dich"}),
    "underscore-name": ("_A1=x", {"_A1": "x"}),
    "empty-file": ("", {}),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_syntax(text, expected):
    assert expected == parse_env_file(text, "x.env")


ERRORS = {
    "no-equals": ("A=1\njust words\n", "x.env:2: expected KEY=VALUE (got 'just words')"),
    "bad-name": (
        "1A=x",
        "x.env:1: '1A' is not a variable name: use letters, digits and '_', not starting with a digit",
    ),
    "dash-in-name": (
        "\n\nMY-VAR=x",
        "x.env:3: 'MY-VAR' is not a variable name: use letters, digits and '_', not starting with a digit",
    ),
    "empty-name": (
        "=x",
        "x.env:1: '' is not a variable name: use letters, digits and '_', not starting with a digit",
    ),
    "unclosed-double": ('A=1\nB="open\nC=3\n', 'x.env:2: the " quote opened here is never closed'),
    "unclosed-single": ("B='open", "x.env:1: the ' quote opened here is never closed"),
    "text-after-quote": ("A='x' y", "x.env:1: unexpected text after the closing quote: 'y'"),
    "nul": ("A=x\0y", "x.env:1: the value of 'A' has a NUL character"),
}


@pytest.mark.parametrize(("text", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_errors_name_the_file_and_line(text, message):
    with pytest.raises(EnvFileError) as info:
        parse_env_file(text, "x.env")
    assert message == str(info.value)


def test_read_errors_name_the_key(tmp_path):
    key = "services.web.env_file"
    missing = tmp_path / "missing.env"
    with pytest.raises(Unresolved) as info:
        read_env_file(str(missing), key)
    assert (
        key,
        f"'{key}' names {str(missing)!r}, which cannot be read: No such file or directory",
    ) == (
        info.value.key,
        info.value.message,
    )
    binary = tmp_path / "bad.env"
    binary.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(Unresolved) as info:
        read_env_file(str(binary), key)
    assert f"'{key}': {binary}:2: not valid UTF-8 text" == info.value.message
    syntax = tmp_path / "syntax.env"
    syntax.write_text("A=1\n\noops\n")
    with pytest.raises(Unresolved) as info:
        read_env_file(str(syntax), key)
    assert f"'{key}': {syntax}:3: expected KEY=VALUE (got 'oops')" == info.value.message
    huge = tmp_path / "huge.env"
    huge.write_bytes(b"A=" + b"x" * MAX_ENV_FILE)
    with pytest.raises(Unresolved) as info:
        read_env_file(str(huge), key)
    assert (
        f"'{key}' names {str(huge)!r}, which is larger than 1M; is it an env file?"
        == info.value.message
    )


def _service(**keys):
    return Policy.from_dict({"services": {"web": {"command": "x", **keys}}}).services["web"]


BASE = {
    "PATH": "/p",
    "HOME": "/root",
    "USER": "root",
    "LANG": "C.UTF-8",
    "TERM": "xterm",
    "SECRET": "s",
}


def test_layers(tmp_path):
    """nsup's environment, then USER/HOME of the user, then each file in order, then env."""
    one, two = tmp_path / "one.env", tmp_path / "two.env"
    one.write_text("A=from-one\nB=from-one\nC=from-one\n")
    two.write_text("B=from-two\nC=from-two\n")
    service = _service(env_file=[str(one), str(two)], env={"C": "from-env"})
    env = service_environment(service, Identity(name="svc", home="/home/svc"), "services.web", BASE)
    assert {
        **BASE,
        "USER": "svc",
        "HOME": "/home/svc",
        "A": "from-one",
        "B": "from-two",
        "C": "from-env",
    } == env


def test_env_inherit_false_keeps_five_variables(tmp_path):
    path = tmp_path / "web.env"
    path.write_text("FROM_FILE=1\n")
    service = _service(env_inherit=False, env_file=str(path), env={"E": "2"})
    env = service_environment(service, Identity(), "services.web", BASE)
    assert {
        **{k: BASE[k] for k in ("PATH", "HOME", "USER", "LANG", "TERM")},
        "FROM_FILE": "1",
        "E": "2",
    } == env
    bare = service_environment(service, Identity(), "services.web", {"SECRET": "s"})
    assert {"PATH": DEFAULT_PATH, "FROM_FILE": "1", "E": "2"} == bare


def test_one_env_file_is_named_without_an_index(tmp_path):
    service = _service(env_file=str(tmp_path / "none.env"))
    with pytest.raises(Unresolved) as info:
        service_environment(service, Identity(), "services.web", BASE)
    assert "services.web.env_file" == info.value.key
    service = _service(env_file=["/dev/null", str(tmp_path / "none.env")])
    with pytest.raises(Unresolved) as info:
        service_environment(service, Identity(), "services.web", BASE)
    assert "services.web.env_file[1]" == info.value.key
