"""`datazone-client` without a gateway: settings, input files, exit codes, output CSV.

The same commands run against the real gateway in test_e2e.py; here a fake transport
stands behind the SDK so that every branch of the CLI can be reached quickly.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import Workbook
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from datazone.client import cli
from datazone.client.cli import SUBCOMMANDS, load_subcommand
from datazone.client.commands import common
from datazone.client.enterprises import BULK_CHECK_FROM, find_invalid
from datazone.client.sdk import ZoneClient
from tests.client.codes import bad_check, make_uscc
from tests.client.fake_gateway import CLIENT_ID, SECRET, URL, FakeGateway, problem
from tests.client.test_sdk import FAST

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DATAZONE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATAZONE_PROFILE", str(tmp_path / "no-profile.toml"))


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()

    def client(ctx: Any) -> ZoneClient:
        zone = ZoneClient(
            url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=FAST, transport=fake.transport()
        )
        zone._sleep = lambda s: None
        return zone

    monkeypatch.setattr(common, "zone_client", client)
    return fake


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def write_list(path: Path, codes: list[str], header: str = "uscc", encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["客户", header])
        for i, code in enumerate(codes):
            writer.writerow([f"客户{i}", code])
    return path


def test_no_settings_is_bad_input_naming_what_to_set() -> None:
    result = invoke("products")
    assert result.exit_code == 2
    assert "DATAZONE_URL" in result.output and "DATAZONE_CLIENT_SECRET" in result.output


def test_there_is_no_secret_option() -> None:
    for command in ("products", "lookup", "batch", "token"):
        assert "secret" not in invoke(command, "--help").output.lower()
    assert invoke("token", "--client-secret", "x").exit_code == 2


def test_world_readable_profile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "client.toml"
    profile.write_text(f'[bank]\nurl = "{URL}"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}"\n')
    profile.chmod(0o644)
    monkeypatch.setenv("DATAZONE_PROFILE", str(profile))
    result = invoke("--profile", "bank", "token")
    assert result.exit_code == 2
    assert "readable by other users" in result.output and "chmod 600" in result.output
    assert SECRET not in result.output


def test_unreachable_gateway_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "client.toml"
    profile.write_text(
        f'[default]\nurl = "http://127.0.0.1:9"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}"\nmax_attempts = 1\n'
    )
    profile.chmod(0o600)
    monkeypatch.setenv("DATAZONE_PROFILE", str(profile))
    result = invoke("products")
    assert result.exit_code == 1
    assert "unreachable" in result.output and SECRET not in result.output


def test_lookup_prints_the_answer_and_json(gateway: FakeGateway) -> None:
    code = make_uscc(12)
    result = invoke("lookup", "credit-basic", code, "--purpose", "pre_loan")
    assert result.exit_code == 0, result.output
    assert f"企业{code[-4:]}" in result.output
    result = invoke("lookup", "credit-basic", code, "--purpose", "pre_loan", "--json")
    assert result.exit_code == 0 and '"purpose": "pre_loan"' in result.output


def test_lookup_bad_input_sends_nothing(gateway: FakeGateway) -> None:
    result = invoke("lookup", "credit-basic", bad_check(make_uscc(1)), "--purpose", "pre_loan")
    assert result.exit_code == 2 and "check character" in result.output
    result = invoke("lookup", "credit-basic", make_uscc(1), "--purpose", "payday")
    assert result.exit_code == 2 and "pre_loan" in result.output  # click lists the choices
    assert gateway.seen == []


def test_refusal_prints_the_problem_and_exits_1(gateway: FakeGateway) -> None:
    gateway.script = [
        lambda r: problem(403, "consent-missing", "register the consent first", check="consent")
    ]
    result = invoke("lookup", "risk-insight", make_uscc(1), "--purpose", "pre_loan")
    assert result.exit_code == 1
    assert "403 consent-missing" in result.output and "[check: consent]" in result.output
    assert "tok-0" not in result.output


def test_products_table(gateway: FakeGateway) -> None:
    result = invoke("products")
    assert result.exit_code == 0 and "credit-basic" in result.output and "0.00" in result.output


def test_token_shows_scopes_not_the_token(gateway: FakeGateway) -> None:
    result = invoke("token")
    assert result.exit_code == 0
    assert "product:credit-basic" in result.output and "Asia/Shanghai" in result.output
    assert "tok-0" not in result.output
    raw = invoke("token", "--raw")
    assert raw.exit_code == 0 and raw.output.strip() == "tok-1"


def test_batch_reports_bad_lines_and_sends_nothing(gateway: FakeGateway, tmp_path: Path) -> None:
    codes = [make_uscc(i) for i in range(10)]
    codes[3] = bad_check(codes[3])
    codes[8] = ""
    source = write_list(tmp_path / "list.csv", codes, header="统一社会信用代码", encoding="gb18030")
    out = tmp_path / "out.csv"
    result = invoke("batch", "risk-insight", str(source), "--purpose", "post_loan", "--output", str(out))
    assert result.exit_code == 2
    assert "2 of 10 USCCs" in result.output
    assert "line 5:" in result.output and "line 10: '': empty" in result.output  # header is line 1
    assert gateway.seen == [] and not out.exists()


def test_batch_input_problems(gateway: FakeGateway, tmp_path: Path) -> None:
    out = str(tmp_path / "out.csv")
    result = invoke(
        "batch", "risk-insight", str(tmp_path / "absent.csv"), "--purpose", "pre_loan", "--output", out
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    source = write_list(tmp_path / "list.csv", [make_uscc(1)], header="code")
    result = invoke("batch", "risk-insight", str(source), "--purpose", "pre_loan", "--output", out)
    assert (
        result.exit_code == 2
        and "no column 'uscc' or '统一社会信用代码'" in result.output
        and "'code'" in result.output
    )
    result = invoke(
        "batch", "risk-insight", str(source), "--purpose", "pre_loan", "--output", out, "--column", "code"
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "list.json").write_text("[]")
    result = invoke(
        "batch", "risk-insight", str(tmp_path / "list.json"), "--purpose", "pre_loan", "--output", out
    )
    assert result.exit_code == 2 and ".csv or .xlsx" in result.output


def test_batch_writes_one_row_per_enterprise(gateway: FakeGateway, tmp_path: Path) -> None:
    codes = [make_uscc(i) for i in range(25)]
    source = write_list(tmp_path / "list.csv", [*codes, codes[0]])
    out = tmp_path / "out.csv"
    result = invoke(
        "batch",
        "risk-insight",
        str(source),
        "--purpose",
        "post_loan",
        "--output",
        str(out),
        "--chunk-size",
        "10",
    )
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["uscc"] for r in rows] == codes
    assert rows[0].keys() == {"uscc", "found", "n"}
    assert all(r["found"] == ("false" if r["uscc"].endswith("0") else "true") for r in rows)
    assert [len(c.body["usccs"]) for c in gateway.product_calls()] == [10, 10, 5]
    assert "25 enterprises" in result.output


def test_batch_refused_midway_keeps_what_was_answered(gateway: FakeGateway, tmp_path: Path) -> None:
    codes = [make_uscc(i) for i in range(25)]
    source = write_list(tmp_path / "list.csv", codes)
    out = tmp_path / "out.csv"
    gateway.script = [
        lambda r: gateway.answer(r, json.loads(r.content)),
        lambda r: problem(403, "quota-exhausted", "monthly quota used up", check="quota"),
    ]
    result = invoke(
        "batch",
        "risk-insight",
        str(source),
        "--purpose",
        "pre_loan",
        "--output",
        str(out),
        "--chunk-size",
        "10",
    )
    assert result.exit_code == 1
    assert (
        "quota-exhausted" in result.output and "10 enterprises answered before the refusal" in result.output
    )
    with out.open(encoding="utf-8-sig") as f:
        assert len(list(csv.DictReader(f))) == 10


def test_batch_from_xlsx_flags_numeric_cells(gateway: FakeGateway, tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["uscc", "name"])
    sheet.append([make_uscc(1), "a"])
    sheet.append([911101050000000017, "b"])  # typed into a General cell: Excel keeps a number
    sheet.append([make_uscc(2), "c"])
    source = tmp_path / "list.xlsx"
    book.save(source)
    out = tmp_path / "out.csv"
    result = invoke("batch", "risk-insight", str(source), "--purpose", "pre_loan", "--output", str(out))
    assert (
        result.exit_code == 2 and "line 3:" in result.output and "format the column as text" in result.output
    )
    sheet.delete_rows(3)
    book.save(source)
    result = invoke("batch", "risk-insight", str(source), "--purpose", "pre_loan", "--output", str(out))
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8-sig") as f:
        assert [r["uscc"] for r in csv.DictReader(f)] == [make_uscc(1), make_uscc(2)]


def test_sdk_imports_nothing_of_the_server_side() -> None:
    code = (
        "import sys, datazone.client, datazone.client.cli, datazone.client.anonymous\n"
        "import datazone.client.commands.calls, datazone.client.commands.psi, datazone.client.commands.scoring\n"
        "datazone.client.ZoneClient\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'fastapi', 'starlette', 'alembic', 'psycopg'}"
        " or m in {'datazone.db', 'datazone.app', 'datazone.config', 'datazone.deps'} or m.endswith('.service')]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("datazone-client")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "lookup" in result.stdout


# -- start-up: --help and the plain commands load no more than they need --------------------------

HEAVY = (
    "numpy",
    "gmpy2",
    "private_set_intersection",
    "spu",
    "jax",
    "httpx",
    "cryptography",
    "datazone.privacy",
)


def imported_by(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the command in a fresh interpreter (with these DATAZONE_ settings only); every module
    loaded by the time it exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAZONE_")} | (env or {})
    listing = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from datazone.client.cli import main\n"
        f"sys.argv = ['datazone-client', *{list(args)!r}]\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    return result, set(json.loads(listing.read_text()))


def test_help_lists_every_command_by_its_own_summary() -> None:
    for name, sub in SUBCOMMANDS.items():
        real = load_subcommand(name)
        assert real.name == name
        assert (real.help or "").strip().splitlines()[0] == sub.summary, name
    defined: set[str] = set()
    for module in {sub.module for sub in SUBCOMMANDS.values()}:
        loaded = get_command(import_module(module).app)
        defined |= set(loaded.list_commands(None)) if isinstance(loaded, TyperGroup) else {str(loaded.name)}
    assert defined == set(SUBCOMMANDS)  # a command added to a module must be listed too


def test_help_imports_no_command_module_nor_the_sdk(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "--help")
    assert result.returncode == 0 and not [
        line for line in result.stderr.splitlines() if "import time" not in line
    ]
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.stdout or f"│ {name} " in result.stdout
    assert not {m for m in modules if m.startswith(HEAVY)}, sorted(m for m in modules if m.startswith(HEAVY))
    assert not {m for m in modules if m.startswith("datazone.client.commands.")}


def test_a_plain_command_leaves_psi_and_scoring_unloaded(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "token")
    assert result.returncode == 2 and "DATAZONE_URL" in result.stderr  # no settings: it got as far as the SDK
    assert "datazone.client.commands.calls" in modules and "httpx" in modules
    unloaded = (
        "gmpy2",
        "private_set_intersection",
        "spu",
        "datazone.privacy",
        "datazone.client.commands.psi",
    )
    assert not {m for m in modules if m.startswith(unloaded)}, sorted(
        m for m in modules if m.startswith(unloaded)
    )


def test_a_subcommands_own_help_loads_its_module(tmp_path: Path) -> None:
    result, modules = imported_by(tmp_path, "model", "--help")
    assert result.returncode == 0 and "keygen" in result.stdout and "retire" in result.stdout
    assert "datazone.client.commands.scoring" in modules and "datazone.client.commands.psi" not in modules


# -- start-up: every command's --help, and plain commands, in well under half a second of CPU -----

# what no command's --help may load: HTTP, NumPy, the PSI engines (SecretFlow's SPU, OpenMined's
# PSI), the JOSE stack, and anything of the server's
HELP_HEAVY = (
    "httpx",
    "numpy",
    "spu",
    "jax",
    "private_set_intersection",
    "datazone.privacy.openmined",
    "datazone.privacy.engine",
    "authlib",
    "joserfc",
    "sqlalchemy",
    "datazone.db",
)


def _every_help() -> list[tuple[str, ...]]:
    """Every command's `--help`, and each of a group's commands (`model keygen --help`)."""
    calls: list[tuple[str, ...]] = []
    for name in SUBCOMMANDS:
        calls.append((name,))
        command = load_subcommand(name)
        if isinstance(command, TyperGroup):
            calls += [(name, sub) for sub in command.list_commands(None)]
    return calls


def run_measured(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str], float]:
    """`imported_by`, plus the CPU seconds (user and system) the run took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result, modules = imported_by(tmp_path, *args, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, modules, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("args", _every_help(), ids=" ".join)
def test_every_commands_help_is_light_quick_and_quiet(tmp_path: Path, args: tuple[str, ...]) -> None:
    result, modules, cpu = run_measured(tmp_path, *args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert args[-1] in result.stdout and "--help" in result.stdout
    heavy = sorted(m for m in modules if m.startswith(HELP_HEAVY) or m.endswith(".service"))
    assert heavy == []
    assert cpu > 0  # its time: tests/bench_cli.py (a timed test fails on a busy machine)


@pytest.mark.parametrize(
    "args",
    [
        ("lookup", "credit-basic", "NOT-A-CODE", "--purpose", "pre_loan"),
        ("lookup", "credit-basic"),  # a missing argument
        ("token", "--no-such-option"),
        ("nope",),
    ],
    ids=" ".join,
)
def test_argument_errors_are_quick_and_load_no_http_nor_numpy(tmp_path: Path, args: tuple[str, ...]) -> None:
    result, modules, cpu = run_measured(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() and "Traceback" not in result.stderr
    heavy = sorted(m for m in modules if m.startswith(HELP_HEAVY))
    assert heavy == []
    assert cpu > 0  # its time: tests/bench_cli.py


class LoopbackGateway(ThreadingHTTPServer):
    """The fake gateway's answers over real HTTP on 127.0.0.1, for a command run as a process."""

    def __init__(self, gateway: FakeGateway) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = httpx.Request(
                    self.command, URL + self.path, headers=dict(self.headers), content=body
                )
                response = gateway.handle(request)
                response.read()
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = _answer

        super().__init__(("127.0.0.1", 0), Handler)


def test_token_from_the_environment_loads_no_numpy_nor_jose(tmp_path: Path) -> None:
    server = LoopbackGateway(FakeGateway())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "DATAZONE_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "DATAZONE_CLIENT_ID": CLIENT_ID,
            "DATAZONE_CLIENT_SECRET": SECRET,
        }
        result, modules, cpu = run_measured(tmp_path, "token", env=env)
        assert result.returncode == 0, result.stderr
        assert "product:credit-basic" in result.stdout and "tok-0" not in result.stdout
        assert result.stderr == ""
        # httpx is what the command is for; a client with a secret needs no JOSE or key parsing,
        # and no USCC is checked, so neither NumPy nor the privacy protocols load
        assert "httpx" in modules
        unloaded = (
            "numpy",
            "authlib",
            "joserfc",
            "datazone.privacy",
            "gmpy2",
            "spu",
            "private_set_intersection",
        )
        assert sorted(m for m in modules if m.startswith(unloaded)) == []
        # httpx alone costs about 0.15 s of CPU to import; the command's time: tests/bench_cli.py
        assert cpu > 0
    finally:
        server.shutdown()
        server.server_close()


def test_one_code_is_checked_without_numpy_and_both_paths_agree() -> None:
    code = (
        "import sys\n"
        "from datazone.client.enterprises import find_invalid\n"
        "bad = find_invalid(['91350100M000100Y43', '91350100M000100Y44', ''])\n"
        "print([b.position for b in bad], 'numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[1,", "2]", "False"]
    # the pure-Python path for short lists and the vectorised one for long lists find the same codes
    codes = [make_uscc(i) for i in range(BULK_CHECK_FROM)]
    for i, broken in ((5, bad_check), (77, lambda c: c[:-1]), (9_999, lambda c: c.lower() + "!")):
        codes[i] = broken(codes[i])
    assert [b.position for b in find_invalid(codes)] == [5, 77, 9_999]
    short = codes[:100]
    assert [(b.position, b.reason) for b in find_invalid(short)] == [
        (b.position, b.reason) for b in find_invalid(codes) if b.position < 100
    ]
