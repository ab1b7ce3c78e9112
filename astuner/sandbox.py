"""Run model-written Python in a separate, limited process: `run_python` and the drop-in tool
`execute_python_code` (same name, parameters and output format as AgentScope's).

Layers, outermost first. `SandboxResult.layers` lists those applied; a kernel layer the machine
refuses (old kernel, no user namespaces, not Linux) is skipped, never fatal.

- process-group: `python -I -B -u` in a new session; on the wall-clock timeout, and always at the
  end, the whole process group gets SIGKILL. Output is drained while it runs: at most
  `max_output_bytes` per stream are kept, the rest is read and thrown away.
- clean-env: a minimal environment (no API keys, no tokens); a fresh temporary work dir as cwd,
  HOME and TMPDIR, removed afterwards. The parent's other fds are not inherited.
- rlimits: RLIMIT_AS (the memory cap: allocations fail with MemoryError), RLIMIT_CPU,
  RLIMIT_FSIZE, RLIMIT_CORE=0, RLIMIT_NOFILE; soft = hard, not to be raised again.
- pids-cgroup / nproc: at most `max_processes` processes and threads (fork fails with EAGAIN).
  As root, a pids cgroup of its own made beside this process's (v1, or v2 where this cgroup
  delegates pids), removed afterwards; root ignores RLIMIT_NPROC. Otherwise RLIMIT_NPROC, set
  inside the new user namespace, where it counts the sandbox's processes only.
- netns: unshare(CLONE_NEWNET) (in a new user namespace when not root): only a loopback that is
  down, no route anywhere, the host's 127.0.0.1 included.
- pidns: the code runs as PID 1 of a new PID namespace; when it dies the kernel kills all its
  descendants, even those that left the process group with setsid().
- no-new-privs, no-caps: PR_SET_NO_NEW_PRIVS; all capability sets emptied (a root parent gives
  a root child without root's powers).
- landlock-fs: creating, writing, truncating, removing, renaming, linking only beneath the work
  dir (and writing /dev/null). A Landlock domain also denies ptrace-class access to processes
  outside it: /proc/<pid>/environ, mem, ns/* of the parent or anyone else cannot be opened.
  landlock-net (ABI >= 4): TCP bind and connect denied. landlock-scope (ABI >= 6): no signals
  to, and no abstract unix sockets of, processes outside.
- seccomp-unix: a seccomp filter (after no-new-privs, so inherited by every descendant and across
  exec: a fresh interpreter started with `_posixsubprocess.fork_exec` is under it too) denies
  socket(AF_UNIX) (EACCES): no pathname unix socket of the host (/var/run/docker.sock) can be
  reached, which Landlock cannot stop before Linux adds a connect right for them. socketpair()
  stays (asyncio needs it). It also denies io_uring_setup (whose operations would open sockets
  past the filter), x32 syscall numbers and other ABIs' syscalls (int 0x80).
- audit-hook: a `sys.addaudithook` hook, portable and always on (readable PermissionErrors): no
  socket connect/bind/sendto/DNS, no subprocess/exec/fork/spawn/system, no signals to others, no
  ctypes calls or cffi, no setrlimit, no gc object walking, no writes,
  renames or removals outside the work dir, no /proc/<other pid>/.

Limits, honestly:
- Reads are not restricted: the code can read every file the parent's user can (source trees,
  ~/.ssh, token caches). Only environment variables are hidden.
- The audit hook is not a security boundary (PEP 578 says so): a memory corruption bug in
  CPython or a C extension (crafted marshal data, numpy) removes it, and some paths bypass it
  (os.open with dir_fd, `_posixsubprocess.fork_exec`). Without the kernel layers (not Linux;
  AppArmor-restricted user namespaces) it is all that stands between the code and the network
  and the file system; rlimits, clean-env and the group kill stay.
- Denying ctypes loading and calls means libraries that need them (torch) do not import; sympy,
  numpy, pandas do. ctypes pointer indexing is not audited: one more way to corrupt memory.
- The seccomp filter covers unix sockets and io_uring only: the rest of the kernel syscall
  surface is reachable (kernel bugs).
- Landlock-net covers TCP only: UDP and raw sockets are stopped by netns and the audit hook,
  pathname unix sockets (e.g. /var/run/docker.sock) by seccomp-unix and the audit hook. Without
  the kernel layers, nothing stops a fresh interpreter started with `_posixsubprocess.fork_exec`.
- As root without a writable pids cgroup (a container's read-only /sys/fs/cgroup) the process
  count is not limited: neither pids-cgroup nor nproc is listed.
- RLIMIT_FSIZE caps each file, not their number: the code can fill the work dir's file system
  within its timeout. Without pidns, a descendant that calls setsid() survives the group kill
  (it needs fork, which the audit hook denies).
- As PID 1 the code ignores signals it sends itself that have no handler (SIGTERM, SIGUSR1).
"""

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_LIMITS", "SandboxLimits", "SandboxResult", "execute_python_code", "run_python"]


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 30  # wall clock; RLIMIT_CPU is this + 1 s
    memory_mb: int = 1024  # RLIMIT_AS
    max_output_bytes: int = 65536  # kept per stream; the rest is discarded
    file_size_mb: int = 16  # RLIMIT_FSIZE
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_processes: int = 64  # processes and threads: a pids cgroup (root) or RLIMIT_NPROC in a user namespace
    # For tests and diagnosis: switch a family of layers off to show the others hold alone.
    kernel_layers: bool = True  # netns, pidns, no-new-privs, no-caps, landlock
    audit_hook: bool = True


DEFAULT_LIMITS = SandboxLimits()


@dataclass
class SandboxResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    layers: list[str] = field(default_factory=list)
    pid: int | None = None  # the child's pid = its process group id (already killed)


# Runs in the fresh child (`python -I -c`) before the user's main.py; self-contained.
_BOOTSTRAP = r"""
import json, os, re, resource, sys, traceback, types
cfg = json.loads(sys.argv[1]); wd = os.path.realpath(os.getcwd()); layers = []

def set_limits():
    for name, soft, hard in (("RLIMIT_AS", cfg["mem"], cfg["mem"]), ("RLIMIT_CPU", cfg["cpu"], cfg["cpu"] + 1),
                             ("RLIMIT_FSIZE", cfg["fsize"], cfg["fsize"]), ("RLIMIT_CORE", 0, 0),
                             ("RLIMIT_NOFILE", cfg["nofile"], cfg["nofile"])):
        res = getattr(resource, name); cur = resource.getrlimit(res)[1]
        if cur != resource.RLIM_INFINITY: soft, hard = min(soft, cur), min(hard, cur)
        resource.setrlimit(res, (soft, hard))
    layers.append("rlimits")

def pids_cgroup():  # before the namespaces and Landlock: the waiter and PID 1 are both counted
    path = cfg["cgroup"]
    if not path: return
    try:
        os.mkdir(path)
        for name, value in (("pids.max", str(cfg["nproc"])), ("cgroup.procs", "0")):
            with open(os.path.join(path, name), "w") as f: f.write(value)
        layers.append("pids-cgroup")
    except OSError: pass

def seccomp_filter(libc, ctypes):  # socket(AF_UNIX): no pathname socket of the host (docker.sock) is reachable
    arch, nr_socket = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}[os.uname().machine]
    ld, jeq, jge, ret, allow = 0x20, 0x15, 0x35, 0x06, 0x7FFF0000
    deny = lambda errno: (ret, 0, 0, 0x50000 | errno)  # SECCOMP_RET_ERRNO
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), deny(1),  # another ABI (i386 int 0x80): EPERM
            (ld, 0, 0, 0), (jge, 0, 1, 0x40000000), deny(1),  # x32 numbers (x86_64): EPERM
            (jeq, 0, 1, 425), deny(38),  # io_uring_setup: its ops could open sockets unfiltered; ENOSYS
            (jeq, 0, 3, nr_socket), (ld, 0, 0, 16), (jeq, 0, 1, 1), deny(13),  # socket(AF_UNIX, ...): EACCES
            (ret, 0, 0, allow)]
    class Insn(ctypes.Structure): _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
    class Prog(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
    insns = (Insn * len(prog))(*[Insn(*i) for i in prog]); ul = ctypes.c_ulong
    if libc.prctl(22, ul(2), ctypes.byref(Prog(len(prog), insns)), ul(0), ul(0)) == 0: layers.append("seccomp-unix")  # PR_SET_SECCOMP, FILTER

def kernel_layers():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True); sc = libc.syscall
    uid, gid = os.geteuid(), os.getegid(); user = 0x10000000 if uid else 0  # CLONE_NEWUSER
    pids_cgroup()
    for flags, names in ((0x40000000 | 0x20000000, ["netns", "pidns"]), (0x40000000, ["netns"])):  # NEWNET|NEWPID
        if libc.unshare(flags | user) == 0:
            layers.extend(names); break
    if user and "netns" in layers:
        try:
            for f, s in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{f}", "w") as fh: fh.write(s)
        except OSError: pass
        try:  # counted per user namespace: the sandbox's own processes, not the user's others
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"])); layers.append("nproc")
        except (OSError, ValueError): pass
    if "pidns" in layers:  # the fork is PID 1 of the new namespace; this process waits outside it
        import signal; child = []  # on SIGUSR1 (the timeout) it kills and reaps PID 1: no orphaned zombie
        signal.signal(signal.SIGUSR1, lambda *_: child and os.kill(child[0], signal.SIGKILL))
        pid = os.fork()
        if pid:
            child.append(pid); os.close(cfg["fd"]); code = 1
            try:  # exit as PID 1 did
                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                if code < 0:
                    if -code != signal.SIGKILL: signal.signal(-code, signal.SIG_DFL)
                    os.kill(os.getpid(), -code)
            finally:
                os._exit(code if code >= 0 else 128 - code)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    if libc.prctl(38, 1, 0, 0, 0) == 0: layers.append("no-new-privs")  # PR_SET_NO_NEW_PRIVS
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f: last = int(f.read())
    except (OSError, ValueError): last = 63
    for cap in range(last + 1): libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    if libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()) == 0: layers.append("no-caps")
    if os.uname().machine not in ("x86_64", "aarch64") or "no-new-privs" not in layers: return
    try: landlock(ctypes, sc)
    finally: seccomp_filter(libc, ctypes)

def landlock(ctypes, sc):
    size_t, u32 = ctypes.c_size_t, ctypes.c_uint32
    abi = sc(444, None, size_t(0), u32(1))  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1: return
    fs = (1 << 1) | sum(1 << b for b in range(4, 13 + (abi >= 2) + (abi >= 3)))  # WRITE_FILE, REMOVE_*, MAKE_*, REFER, TRUNCATE
    attr = (ctypes.c_uint64 * 3)(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # fs, net: TCP bind|connect, scoped
    rfd = sc(444, attr, size_t(8 if abi < 4 else 16 if abi < 6 else 24), u32(0))
    if rfd < 0: return
    class PathBeneath(ctypes.Structure):
        _pack_ = 1; _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]
    ok = True
    for path, access in ((wd, fs), ("/dev/null", fs & ((1 << 1) | (1 << 14)))):
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        ok = ok and sc(445, rfd, 1, ctypes.byref(PathBeneath(access, pfd)), u32(0)) == 0  # LANDLOCK_RULE_PATH_BENEATH
        os.close(pfd)
    if ok and sc(446, rfd, u32(0)) == 0:
        layers.extend(["landlock-fs"] + ["landlock-net"] * (abi >= 4) + ["landlock-scope"] * (abi >= 6))
    os.close(rfd)

def make_hook(wd):
    me = os.readlink("/proc/self") if os.path.isdir("/proc/self") else str(os.getpid())  # our pid as /proc shows it
    deny = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                      "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname",
                      "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                      "os.killpg", "os.startfile", "resource.setrlimit", "resource.prlimit", "gc.get_objects",
                      "gc.get_referrers", "gc.get_referents", "sqlite3.enable_load_extension",
                      "sqlite3.load_extension", "sys.remote_exec"})
    path_args = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
                 "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
                 "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,), "sqlite3.connect": (0,)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    other_proc = re.compile(r"/proc/(\d+)(/|$)"); realpath, fspath, fsdecode = os.path.realpath, os.fspath, os.fsdecode
    no_memory = frozenset({"cffi", "_cffi_backend", "_testcapi", "_testinternalcapi"})  # un-audited native calls

    def resolve(p):
        try: return realpath(fsdecode(fspath(p)))
        except Exception: return None

    def inside(p):
        if isinstance(p, int) or p in (":memory:", "", b""): return True
        if isinstance(p, str) and p.startswith("file:"): return False
        r = resolve(p)
        return r is not None and (r == wd or r == "/dev/null" or r.startswith(wd + "/"))

    def hook(event, args):
        if event in deny or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed here")
        if event == "import" and args[0].partition(".")[0] in no_memory:
            raise ImportError(f"sandbox: importing {args[0]} is not allowed here")
        if event == "os.kill" and args[0] != os.getpid():
            raise PermissionError("sandbox: signalling other processes is not allowed here")
        if event == "open":
            path, mode, flags = args
            writing = bool((flags or 0) & write_flags) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} is not allowed: only the working directory is writable")
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            m = other_proc.match(resolve(args[0]) or "")
            if m and m.group(1) != me:
                raise PermissionError(f"sandbox: {args[0]!r} belongs to another process")
        if event in path_args:
            for i in path_args[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} on {args[i]!r} is not allowed outside the working directory")
    return hook

try: set_limits()
except (OSError, ValueError): pass
if cfg["kernel"]:
    try: kernel_layers()
    except Exception: pass
import ctypes  # imported before the hook: libraries that only import it (sympy does) keep working; using it is denied
with open("main.py", encoding="utf-8") as f: source = f.read()
main = types.ModuleType("__main__"); main.__file__ = os.path.join(wd, "main.py"); main.__builtins__ = __builtins__
sys.modules["__main__"] = main; sys.argv = ["main.py"]; sys.path.insert(0, wd)
if cfg["audit"]:
    sys.addaudithook(make_hook(wd)); layers.append("audit-hook")
os.write(cfg["fd"], json.dumps(layers).encode()); os.close(cfg["fd"])
del cfg, set_limits, pids_cgroup, seccomp_filter, kernel_layers, landlock, make_hook
try:
    exec(compile(source, main.__file__, "exec"), main.__dict__)
except SystemExit:
    raise
except BaseException as e:
    traceback.print_exception(type(e), e, e.__traceback__.tb_next); sys.exit(1)
"""


async def _drain(pipe, cap: int) -> tuple[bytes, int]:
    """Read `pipe` to its end, keeping the first `cap` bytes; returns them and the count dropped."""
    reader, loop = asyncio.StreamReader(), asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    kept, dropped = bytearray(), 0
    try:
        while chunk := await reader.read(1 << 16):
            room = max(cap - len(kept), 0)
            kept += chunk[:room]
            dropped += len(chunk) - min(room, len(chunk))
    finally:
        transport.close()
    return bytes(kept), dropped


def _new_pids_cgroup_path() -> str | None:
    """Where the child makes its pids cgroup: beside this process's own, where we may write (as root;
    an unprivileged user's process count is capped by RLIMIT_NPROC in its user namespace instead)."""
    if os.geteuid() != 0:
        return None
    try:
        with open("/proc/self/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return None
    for _, controllers, path in lines:
        if "pids" in controllers.split(","):  # cgroup v1
            base = f"/sys/fs/cgroup/pids{path}"
            break
    else:  # cgroup v2, where this cgroup already hands the pids controller to its children
        path = next((p for h, c, p in lines if h == "0" and c == ""), None)
        if path is None:
            return None
        base = f"/sys/fs/cgroup{path}"
        try:
            with open(f"{base}/cgroup.subtree_control") as f:
                if "pids" not in f.read().split():
                    return None
        except OSError:
            return None
    if not os.access(base, os.W_OK):
        return None
    return os.path.join(base.rstrip("/"), f"astuner-sandbox-{os.getpid()}-{os.urandom(6).hex()}")


async def _remove_cgroup(path: str) -> None:
    """rmdir the child's cgroup once its last process is gone (the kernel refuses while one is)."""
    for _ in range(40):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            await asyncio.sleep(0.05)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return text + f"\n[sandbox: output truncated, {dropped} more bytes discarded]" if dropped else text


async def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` as `main.py` in a fresh sandboxed interpreter (see the module docstring)."""
    limits = limits or DEFAULT_LIMITS
    cfg = {
        "mem": limits.memory_mb << 20,
        "cpu": math.ceil(limits.timeout_s) + 1,
        "fsize": limits.file_size_mb << 20,
        "nofile": limits.max_open_files,
        "kernel": limits.kernel_layers and sys.platform == "linux",
        "audit": limits.audit_hook,
        "nproc": limits.max_processes,
    }
    cfg["cgroup"] = _new_pids_cgroup_path() if cfg["kernel"] else None
    layers_r, layers_w = os.pipe()
    os.set_blocking(layers_r, False)
    layer_bytes = bytearray()

    def child_layers() -> list[str]:  # what the child reports it applied: one small (atomic) write
        with contextlib.suppress(BlockingIOError):
            layer_bytes.extend(os.read(layers_r, 1 << 16))
        with contextlib.suppress(ValueError):
            return json.loads(layer_bytes or b"[]")
        return []

    try:
        with tempfile.TemporaryDirectory(prefix="astuner-sandbox-", ignore_cleanup_errors=True) as wd:
            with open(os.path.join(wd, "main.py"), "w", encoding="utf-8") as f:
                f.write(code)
            env = {
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONUTF8": "1",
                "PYTHONIOENCODING": "utf-8",
                "HOME": wd,
                "TMPDIR": wd,
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            }
            cfg["fd"] = layers_w
            # Our own pipes, not asyncio's: its proc.wait() would also wait for a descendant holding them open.
            (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-B",
                    "-u",
                    "-X",
                    "utf8",
                    "-c",
                    _BOOTSTRAP,
                    json.dumps(cfg),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    cwd=wd,
                    env=env,
                    start_new_session=True,
                    pass_fds=(layers_w,),
                )
            except BaseException:
                os.close(out_r), os.close(err_r)
                raise
            finally:
                os.close(layers_w), os.close(out_w), os.close(err_w)
            readers = [
                asyncio.ensure_future(_drain(os.fdopen(fd, "rb", 0), limits.max_output_bytes)) for fd in (out_r, err_r)
            ]
            timed_out = False
            try:
                try:
                    await asyncio.wait_for(proc.wait(), limits.timeout_s)
                except TimeoutError:
                    timed_out = True
                    if "pidns" in child_layers() and proc.returncode is None:
                        os.kill(proc.pid, signal.SIGUSR1)  # the waiter outside the namespace kills and reaps its PID 1
                        await asyncio.wait([asyncio.ensure_future(proc.wait())], timeout=1)
                finally:  # always, even when the caller cancels: the timeout, and any descendant left in the group
                    _kill_group(proc.pid)
                await proc.wait()
                # Every writer died with the group; only a descendant that escaped it could hold a pipe open.
                await asyncio.wait(readers, timeout=2)
            finally:
                for r in readers:
                    r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            (out, out_dropped), (err, err_dropped) = [(b"", 0) if r.cancelled() else r.result() for r in readers]
        layers = ["process-group", "clean-env", *child_layers()]
    finally:
        os.close(layers_r)
        if cfg["cgroup"]:
            await _remove_cgroup(cfg["cgroup"])
    stderr = _text(err, err_dropped)
    if timed_out:
        note = f"TimeoutError: The code execution exceeded the timeout of {limits.timeout_s} seconds."
        stderr = f"{stderr}\n{note}" if stderr else note
    return SandboxResult(
        proc.returncode, _text(out, out_dropped), stderr, timed_out, out_dropped > 0, err_dropped > 0, layers, proc.pid
    )


async def execute_python_code(code: str, timeout: float = 30, **kwargs: Any) -> "ToolResponse":  # noqa: F821
    """Execute the given python code in a temp file and capture the return
    code, standard output and error. Note you must `print` the output to get
    the result, and the tmp file will be removed right after the execution.
    The code runs in a sandbox: no network, and files can only be written in
    its working directory.

    Args:
        code (`str`):
            The Python code to be executed.
        timeout (`float`, defaults to `30`):
            The maximum time (in seconds) allowed for the code to run.

    Returns:
        `ToolResponse`:
            The response containing the return code, standard output, and
            standard error of the executed code.
    """
    from agentscope.message import TextBlock
    from agentscope.tool import ToolResponse

    limits = DEFAULT_LIMITS
    try:
        wanted = float(timeout)
    except (TypeError, ValueError):
        wanted = limits.timeout_s
    if not wanted > 0:  # also NaN
        wanted = limits.timeout_s
    result = await run_python(code, dataclasses.replace(limits, timeout_s=min(wanted, limits.timeout_s)))
    returncode = -1 if result.timed_out else result.returncode  # as AgentScope's tool reports a timeout
    text = f"<returncode>{returncode}</returncode><stdout>{result.stdout}</stdout><stderr>{result.stderr}</stderr>"
    return ToolResponse(content=[TextBlock(type="text", text=text)])


def main() -> None:
    """`python -m astuner.sandbox`: which layers this machine gives the sandbox."""
    result = asyncio.run(run_python("print('ok')"))
    print("layers:", " ".join(result.layers))
    print("self-test:", "ok" if result.returncode == 0 and result.stdout.strip() == "ok" else result)


if __name__ == "__main__":
    main()
