"""astuner.sandbox: each limit holds, asserted on the outcome.

Three modes: "full" (every layer the machine gives), "audit-only" (kernel layers off: what a
machine without namespaces or Landlock gets) and "kernel-only" (audit hook off: the kernel
layers alone; skipped, with the reason, where the needed kernel layer is missing).
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from astuner import sandbox
from astuner.sandbox import SandboxLimits, execute_python_code, run_python

ROOT = Path(__file__).resolve().parent.parent
MODES = {"full": {}, "audit-only": {"kernel_layers": False}, "kernel-only": {"audit_hook": False}}
ALWAYS = {"process-group", "clean-env", "rlimits"}


def run(code: str, mode: str = "full", **limits) -> sandbox.SandboxResult:
    return asyncio.run(run_python(code, SandboxLimits(**MODES[mode], **limits)))


@pytest.fixture(scope="module")
def kernel_layers() -> set[str]:
    return set(run("pass", "kernel-only").layers) - ALWAYS


@pytest.fixture(params=list(MODES))
def mode(request, kernel_layers):
    return request.param


def require(mode: str, available: set[str], *any_of: str) -> None:
    if mode == "kernel-only" and not available & set(any_of):
        pytest.skip(f"needs one of the kernel layers {any_of}; this machine gives {sorted(available) or 'none'}")


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_normal_code_and_layers(mode, kernel_layers):
    result = run("import sys\nprint(1 + 1)\nprint('err', file=sys.stderr)", mode)
    assert (result.returncode, result.stdout, result.stderr, result.timed_out) == (0, "2\n", "err\n", False)
    layers = set(result.layers)
    assert ALWAYS <= layers
    assert ("audit-hook" in layers) == (mode != "kernel-only")
    if mode == "audit-only":
        assert layers == ALWAYS | {"audit-hook"}
    else:
        assert layers - ALWAYS - {"audit-hook"} == kernel_layers


def test_libraries_and_errors_work():
    pytest.importorskip("numpy")
    pytest.importorskip("sympy")  # imports ctypes: importing it must work, using it must not
    code = "import numpy, sympy, asyncio, ctypes\nprint(int(numpy.arange(5).sum()), sympy.Integer(2) ** 10)\nctypes.CDLL(None)"
    result = run(code)
    assert result.stdout == "10 1024\n" and result.returncode == 1
    assert 'main.py", line 3' in result.stderr
    assert result.stderr.rstrip().endswith("PermissionError: sandbox: ctypes.dlopen is not allowed here")


def test_infinite_loop_is_stopped_and_its_descendants_die(mode, kernel_layers):
    require(mode, kernel_layers, "pidns")
    token = f"astuner-sandbox-grandchild-{uuid.uuid4().hex}"
    code = f"""
import subprocess, sys
try:
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(120)  # {token}"])
    print("spawned", flush=True)
except PermissionError as e:
    print("blocked:", e, flush=True)
while True:
    pass
"""
    start = time.monotonic()
    try:
        result = run(code, mode, timeout_s=2)
        assert time.monotonic() - start < 20
        assert result.timed_out and result.returncode != 0
        assert "exceeded the timeout of 2 seconds" in result.stderr
        assert result.stdout.startswith("spawned" if mode == "kernel-only" else "blocked: sandbox: subprocess.Popen")
        deadline = time.monotonic() + 3
        while (group_exists(result.pid) or processes_with(token)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_exists(result.pid)  # the process group is gone, zombies included
        assert processes_with(token) == []  # and so is the grandchild that left the group with setsid()
    finally:
        for pid in processes_with(token):
            os.kill(pid, 9)


def test_huge_allocation_fails_with_memory_error(mode):
    code = """
import resource
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("raised the limit")
except (OSError, ValueError) as e:
    print("the limit stays:", e)
try:
    b = bytearray(10 * 1024**3)
except MemoryError:
    print("MemoryError")
    raise
print("allocated")
"""
    result = run(code, mode, memory_mb=512)
    assert result.returncode != 0 and not result.timed_out
    assert "MemoryError" in result.stdout and "allocated" not in result.stdout
    assert "raised the limit" not in result.stdout
    assert "MemoryError" in result.stderr
    assert len(bytearray(1024)) == 1024  # the parent is fine


def test_no_connection_to_a_loopback_listener(mode, kernel_layers):
    require(mode, kernel_layers, "netns", "landlock-net")
    with socket.socket() as srv, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        udp.bind(("127.0.0.1", 0))
        code = f"""
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", {srv.getsockname()[1]}))
    print("tcp connected")
except OSError as e:
    print("tcp blocked:", e)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"leak", ("127.0.0.1", {udp.getsockname()[1]}))
    print("udp sent")
except OSError as e:
    print("udp blocked:", e)
"""
        result = run(code, mode)
        assert result.returncode == 0, result.stderr
        assert "tcp blocked" in result.stdout and "tcp connected" not in result.stdout
        srv.settimeout(0.3)
        with pytest.raises(socket.timeout):
            srv.accept()
        if mode != "kernel-only" or "netns" in kernel_layers:  # Landlock alone covers TCP only
            assert "udp blocked" in result.stdout
            udp.settimeout(0.3)
            with pytest.raises(socket.timeout):
                udp.recvfrom(16)


# Runs the sandbox from a process whose *initial* environment holds the secret: /proc/PID/environ
# shows a process's initial environment, so the test process's own os.environ would prove nothing.
DRIVER = """
import asyncio, json, os, sys
from astuner.sandbox import SandboxLimits, run_python
control = b"hunter2" in open("/proc/self/environ", "rb").read()
code = sys.argv[2].replace("PARENT_PID", str(os.getpid()))
r = asyncio.run(run_python(code, SandboxLimits(**json.loads(sys.argv[1]))))
print(json.dumps({"control": control, "stdout": r.stdout, "stderr": r.stderr}))
"""
SNOOP = """
import os
print("os.environ:", os.environ.get("ASTUNER_SANDBOX_SECRET"), sorted(os.environ))
for path in ("/proc/self/environ", "/proc/PARENT_PID/environ", "/proc/PARENT_PID/task/PARENT_PID/environ"):
    try:
        with open(path, "rb") as f:
            print(path, "read:", f.read())
    except OSError as e:
        print(path, "denied:", e)
"""


def test_secret_environment_variable_never_reaches_the_code(mode, kernel_layers, monkeypatch):
    require(mode, kernel_layers, "landlock-fs")
    monkeypatch.setenv("ASTUNER_SANDBOX_SECRET", "hunter2")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(MODES[mode]), SNOOP],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["control"]  # the secret is there to be stolen from the parent
    assert "hunter2" not in out["stdout"] + out["stderr"]
    assert "os.environ: None" in out["stdout"]
    assert "/proc/self/environ read:" in out["stdout"]
    assert out["stdout"].count("environ denied:") == 2


def test_writes_stay_in_the_work_dir(mode, kernel_layers, tmp_path):
    require(mode, kernel_layers, "landlock-fs")
    outside, via_link, renamed = tmp_path / "escape.txt", tmp_path / "via-link.txt", tmp_path / "renamed.txt"
    code = f"""
import os, tempfile
def attempt(what, fn):
    try:
        fn()
        print(what, "ok")
    except OSError as e:
        print(what, "denied:", e)
attempt("outside", lambda: open({str(outside)!r}, "w").write("x"))
attempt("symlink", lambda: os.symlink({str(via_link)!r}, "link"))
attempt("through the link", lambda: open("link", "w").write("x"))
attempt("inside", lambda: open("inside.txt", "w").write("inside"))
attempt("home", lambda: open(os.path.join(os.environ["HOME"], "home.txt"), "w").write("x"))
attempt("tmp", lambda: os.close(tempfile.mkstemp()[0]))
attempt("rename out", lambda: os.rename("inside.txt", {str(renamed)!r}))
print(open("inside.txt").read(), os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"])
"""
    result = run(code, mode)
    assert result.returncode == 0, result.stderr
    assert not outside.exists() and not via_link.exists() and not renamed.exists()
    for line in ("outside denied:", "through the link denied:", "rename out denied:"):
        assert line in result.stdout
    for line in ("inside ok", "home ok", "tmp ok", "inside True"):
        assert line in result.stdout


def test_output_over_the_cap_is_truncated():
    result = run("print('x' * 200_000)\nprint('y' * 5000, file=__import__('sys').stderr)", max_output_bytes=1000)
    assert result.stdout.startswith("x" * 1000 + "\n[sandbox: output truncated, 199001 more bytes discarded]")
    assert result.stdout_truncated and result.stderr_truncated and result.returncode == 0
    # An endless flood is read and dropped while it runs: the parent keeps only the cap.
    flood = run("import sys\nwhile True:\n    sys.stdout.write('z' * 65536)", timeout_s=1, max_output_bytes=1000)
    assert flood.timed_out and flood.stdout_truncated and len(flood.stdout) < 1200


def test_tool_format_schema_and_timeout_clamp(monkeypatch):
    from agentscope.tool import Toolkit, ToolResponse
    from agentscope.tool import execute_python_code as agentscope_tool

    response = asyncio.run(execute_python_code("print(1 + 1)"))
    assert isinstance(response, ToolResponse)
    assert response.content[0]["text"] == "<returncode>0</returncode><stdout>2\n</stdout><stderr></stderr>"

    schemas = []
    for fn in (agentscope_tool, execute_python_code):
        toolkit = Toolkit()
        toolkit.register_tool_function(fn)
        schemas.append(toolkit.get_json_schemas()[0]["function"])
    ours, theirs = schemas
    assert ours["name"] == theirs["name"] == "execute_python_code"
    assert ours["parameters"]["required"] == theirs["parameters"]["required"] == ["code"]
    for name in ("code", "timeout"):
        assert {k: v for k, v in ours["parameters"]["properties"][name].items() if k != "default"} == {
            k: v for k, v in theirs["parameters"]["properties"][name].items() if k != "default"
        }

    monkeypatch.setattr(sandbox, "DEFAULT_LIMITS", SandboxLimits(timeout_s=1))
    start = time.monotonic()
    text = asyncio.run(execute_python_code("import time\ntime.sleep(60)", timeout=300)).content[0]["text"]
    assert time.monotonic() - start < 20
    assert text.startswith("<returncode>-1</returncode>") and "exceeded the timeout of 1 seconds" in text
    text = asyncio.run(execute_python_code("print('ok')", timeout="soon")).content[0]["text"]
    assert text.startswith("<returncode>0</returncode><stdout>ok\n")


# A fresh interpreter started with _posixsubprocess.fork_exec: no audit hook watches it (the hook lives in
# the sandboxed interpreter only, and fork_exec raises no audit event), so only kernel layers can hold.
FORK_EXEC = """
import _posixsubprocess, os, sys
args = [sys.executable, "-I", "-c", CHILD]
pid = _posixsubprocess.fork_exec(
    args, [os.fsencode(sys.executable)], True, (), None, None,
    -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)
print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def fork_exec_code(child: str) -> str:
    if sys.version_info[:2] not in ((3, 11), (3, 12), (3, 13)):
        pytest.skip("the test calls _posixsubprocess.fork_exec with the 3.11-3.13 signature")
    return FORK_EXEC.replace("CHILD", repr(child))


@pytest.mark.parametrize("mode", ["full", "kernel-only"])  # audit-only: nothing stops a fresh interpreter
def test_fresh_interpreter_cannot_reach_a_unix_socket_outside(mode, tmp_path):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        srv.listen(8)
        child = (
            "import socket\n"
            "try:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            f"    s.connect({str(path)!r}); s.sendall(b'escaped'); print('connected')\n"
            "except OSError as e:\n"
            "    print('blocked:', e)\n"
        )
        result = run(fork_exec_code(child), mode)
        assert result.returncode == 0, result.stderr
        assert "exit 0" in result.stdout, result.stdout + result.stderr  # the child ran
        assert "blocked:" in result.stdout and "connected" not in result.stdout, result.stdout
        assert "seccomp-unix" in result.layers
        srv.settimeout(0.3)
        with pytest.raises(socket.timeout):
            srv.accept()


def test_process_count_is_bounded(tmp_path):
    code = """
import _posixsubprocess, os, sys
started, error = 0, None
for _ in range(200):
    try:
        _posixsubprocess.fork_exec(["/bin/sleep", "20"], [b"/bin/sleep"], True, (), None, None,
            -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)
        started += 1
    except OSError as e:
        error = e
        break
print("started", started, "error", error)
"""
    fork_exec_code("")  # the version check
    t0 = time.monotonic()
    result = run(code, "full", max_processes=16, timeout_s=20)
    assert time.monotonic() - t0 < 15, "the sandbox waited for its sleepers"
    assert result.returncode == 0, result.stderr
    if not {"pids-cgroup", "nproc"} & set(result.layers):
        pytest.skip(f"no process limit here (root without a writable pids cgroup): {result.stdout.strip()}")
    started = int(result.stdout.split()[1])
    assert started < 16 and "error" in result.stdout and "Resource temporarily unavailable" in result.stdout
