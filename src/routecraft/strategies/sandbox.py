"""Run model-written Python (PAL) in a separate, limited process.

``run_python(code)`` writes the program into a fresh temp dir and runs ``python -I`` there with a bootstrap that sets
resource limits, installs an audit hook, executes the program, calls its ``solution()`` and writes the JSON-encoded
return value to a result file. What is enforced, and by what:

* **Time**: the parent kills the whole process group after ``timeout_s`` (+ a start-up grace of
  ``STARTUP_GRACE_S``); RLIMIT_CPU (soft = ceil(timeout_s), hard = +1 s) is a second stop for busy loops.
* **Memory**: RLIMIT_AS = ``memory_mb`` (address space; large allocations raise MemoryError).
* **Files**: RLIMIT_FSIZE (``max_file_mb``) bounds any file the program writes; RLIMIT_NOFILE = 64; RLIMIT_CORE = 0.
* **Processes**: the audit hook refuses fork/exec/spawn/subprocess/kill, and threads are refused by replacing the
  thread-start functions (Python < 3.13 has no audit event for them). RLIMIT_NPROC = 0 is set too, but Linux exempts
  uid 0 from it, so when the parent runs as root (as here, even inside the user namespace) it is not a real stop.
* **Network** and **writes outside the temp dir**, two layers:

  - ``isolation="namespaces"`` (used by ``"auto"`` when it works, probed once per process): the program runs under
    ``unshare --user --map-root-user --mount --net``: a new network namespace with no interface but a down loopback
    (kernel-enforced: connect() fails with ENETUNREACH), and a private mount namespace in which every mount is
    re-mounted read-only except a bind mount of the temp dir (kernel-enforced: EROFS). The program itself then runs in
    a nested user namespace (``unshare --user``) so it holds no capability over that mount namespace and cannot
    re-mount anything writable.
  - always, the bootstrap's audit hook (PEP 578): refuses ``open`` for writing and the ``os``/``shutil`` mutators
    (remove, rename, mkdir, chmod, link, ...) on paths that resolve outside the temp dir, every ``socket.*`` event,
    ``ctypes`` calls and symbol look-ups (importing it is allowed: sympy does), ``cffi``, ``resource.setrlimit``,
    ``sqlite3.connect`` outside the temp dir.
    An audit hook is a guard against accidents, not against a determined attacker; with ``isolation="audit"``
    (no namespaces available) it is the only file/network guard.

* **Environment**: scrubbed (PATH, LANG, HOME=TMPDIR=temp dir, single-threaded BLAS); ``-I`` ignores PYTHON* and
  the user site dir; stdin is /dev/null.

Resource limits are set by the bootstrap (before the program is read), not in ``preexec_fn``: ``preexec_fn`` is not
safe in a threaded parent and PAL extraction runs in worker threads.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

STARTUP_GRACE_S = 1.0
MAX_STDOUT_CHARS = 10_000

Isolation = Literal["auto", "namespaces", "audit"]


@dataclass
class SandboxResult:
    ok: bool
    value: Any = None
    stdout: str = ""
    error: str | None = None
    timed_out: bool = False
    how: str | None = None          # "solution" | "variable:<name>" | "stdout"
    returncode: int | None = None
    duration_s: float = 0.0
    isolation: str = ""             # "namespaces" or "audit": what was actually used

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------- bootstrap code
# Runs as `python -I -c BOOT <workdir> <token> <cpu_s> <mem_bytes> <fsize_bytes>` with cwd = workdir.
_BOOT = r'''
import sys, os
W = os.path.realpath(sys.argv[1]); TOKEN = sys.argv[2]
CPU, MEM, FSIZE = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
AUDIT = sys.argv[6] == "1"
import io, json, math, signal, resource, contextlib, traceback, numbers, fractions, decimal

def _lim(r, soft, hard=None):
    try:
        resource.setrlimit(r, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass
_lim(resource.RLIMIT_CPU, CPU, CPU + 1)
_lim(resource.RLIMIT_AS, MEM)
_lim(resource.RLIMIT_FSIZE, FSIZE)
_lim(resource.RLIMIT_NOFILE, 64)
_lim(resource.RLIMIT_CORE, 0)
_lim(resource.RLIMIT_NPROC, 0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
sys.dont_write_bytecode = True

with open(os.path.join(W, "program.py"), encoding="utf-8", errors="replace") as _f:
    SRC = _f.read()

_WFLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_realpath, _isdir, _fsdecode, _sep = os.path.realpath, os.path.isdir, os.fsdecode, os.sep

def _inside(p):
    if isinstance(p, int):
        return True  # an already-open descriptor
    try:
        rp = _realpath(_fsdecode(p))
    except Exception:
        return False
    return rp == W or rp.startswith(W + _sep)

def _deny(what):
    raise PermissionError("sandbox: " + what)

# event -> (indices of path arguments that must lie inside W, indices of dir_fd arguments that must be None)
_PATH_EVENTS = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                "os.chmod": ((0,), (2,)), "os.lchmod": ((0,), ()), "os.chown": ((0,), (3,)),
                "os.lchown": ((0,), ()), "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)),
                "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "os.setxattr": ((0,), ()),
                "os.removexattr": ((0,), ()), "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
                "os.symlink": ((1,), (2,)), "shutil.rmtree": ((0,), (1,)), "shutil.chown": ((0,), ()),
                "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()), "shutil.copyfile": ((1,), ()),
                "shutil.copytree": ((1,), ()), "shutil.move": ((0, 1), ()), "shutil.make_archive": ((0,), ()),
                "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,))}
_PROC_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
                "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "_thread.start_new_thread",
                "resource.setrlimit", "resource.prlimit", "os.startfile", "webbrowser.open", "sys.remote_exec")
_BLOCKED_MODULES = {"cffi", "_cffi_backend"}

def _hook(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        wants_write = (mode is not None and any(c in str(mode) for c in "wax+")) or \
                      (isinstance(flags, int) and flags & _WFLAGS)
        if wants_write and not _inside(path):
            _deny("write outside the work dir refused: %r" % (path,))
        if mode is None and not isinstance(path, int) and not _inside(path) and _isdir(_fsdecode(path)):
            _deny("opening a directory outside the work dir refused: %r" % (path,))
        return
    if event in _PATH_EVENTS:
        pidx, fidx = _PATH_EVENTS[event]
        for i in pidx:
            if i < len(args) and not _inside(args[i]):
                _deny("%s outside the work dir refused: %r" % (event, args[i]))
        for i in fidx:
            if i < len(args) and isinstance(args[i], int) and args[i] >= 0:  # None / AT_FDCWD (-100) are fine
                _deny("%s with dir_fd refused" % event)
        return
    if event.startswith("socket."):
        _deny("network access refused (%s)" % event)
    if event.startswith("ctypes."):
        if event == "ctypes.dlopen" and args and args[0] is None:
            return  # `import ctypes` opens the running process itself (sympy imports ctypes); symbols stay refused
        _deny("ctypes refused (%s)" % event)
    if event == "import" and args and str(args[0]).split(".")[0] in _BLOCKED_MODULES:
        raise ImportError("sandbox: import of %s refused" % args[0])
    if event in _PROC_EVENTS or event.startswith("os.exec") or event.startswith("os.spawn"):
        _deny("%s refused" % event)
    if event in ("sqlite3.connect", "dbm.open"):
        p = args[0] if args else None
        if p not in (":memory:", b":memory:", "") and not _inside(p):
            _deny("%s outside the work dir refused" % event)

def _jsonable(v, depth=0):
    if depth > 20:
        return repr(v)
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if abs(v) < 10 ** 300 else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, fractions.Fraction):
        return int(v) if v.denominator == 1 else str(v)
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, complex):
        return str(v)
    if type(v).__module__.startswith("numpy"):
        try:
            return _jsonable(v.tolist(), depth + 1)
        except Exception:
            return repr(v)
    if type(v).__module__.startswith("sympy"):
        try:
            if getattr(v, "is_Integer", False):
                return int(v)
            if getattr(v, "is_Float", False):
                return float(v)
        except Exception:
            pass
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, (set, frozenset)):
        items = [_jsonable(x, depth + 1) for x in v]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, numbers.Number):
        try:
            return float(v)
        except Exception:
            return str(v)
    return str(v)

res = {"ok": False, "value": None, "stdout": "", "error": None, "how": None}
buf = io.StringIO()
if AUDIT:
    sys.addaudithook(_hook)
    # Python < 3.13 has no audit event for starting a thread: refuse it by replacing the entry points
    import _thread, threading
    def _no_threads(*a, **k):
        raise PermissionError("sandbox: threads refused")
    for _m, _n in ((_thread, "start_new_thread"), (_thread, "start_new"), (_thread, "start_joinable_thread"),
                   (threading, "_start_new_thread"), (threading, "_start_joinable_thread")):
        if hasattr(_m, _n):
            setattr(_m, _n, _no_threads)
ns = {"__name__": "__pal__", "__builtins__": __builtins__}
try:
    with contextlib.redirect_stdout(buf):
        exec(compile(SRC, "program.py", "exec"), ns)
        sol = ns.get("solution")
        if callable(sol):
            val, how = sol(), "solution"
            if val is None:  # printed its answer instead of returning it
                lines = [l for l in buf.getvalue().splitlines() if l.strip()]
                if lines:
                    val, how = lines[-1].strip(), "stdout"
        else:
            how = None
            for name in ("result", "answer", "ans"):
                if name in ns and not callable(ns[name]):
                    val, how = ns[name], "variable:" + name
                    break
            if how is None:
                lines = [l for l in buf.getvalue().splitlines() if l.strip()]
                if not lines:
                    raise NameError("the program defines no solution() and prints nothing")
                val, how = lines[-1].strip(), "stdout"
    res.update(ok=True, value=_jsonable(val), how=how)
except BaseException as e:  # SystemExit, KeyboardInterrupt too: the program may not end the bootstrap
    tb = traceback.extract_tb(e.__traceback__)
    line = next((f.lineno for f in reversed(tb) if f.filename == "program.py"), None)
    res["error"] = type(e).__name__ + (": " + str(e)[:500] if str(e) else "") + \
        (" (program.py line %d)" % line if line else "")
    del e
ns = sol = val = None
out = buf.getvalue()
res["stdout"] = out[-__MAXOUT__:]
payload = json.dumps(res, default=repr)
fd = os.open(os.path.join(W, "result-" + TOKEN + ".json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, payload.encode("utf-8", "replace")); os.close(fd)
'''.replace("__MAXOUT__", str(MAX_STDOUT_CHARS))

# Stage-1 setup inside `unshare --user --map-root-user --mount --net --fork`: make the temp dir its own (writable)
# mount, re-mount everything else read-only, then run the program in a nested user namespace without capabilities.
_NS_SETUP = r'''
W="$1"; shift
mount --bind "$W" "$W" || { echo "sandbox: bind mount of the work dir failed" >&2; exit 97; }
cd "$W" || exit 97   # the old cwd points below the bind mount, at the soon read-only directory
while read -r _id _par _dev _root mp _rest; do
  [ "$mp" = "$W" ] && continue
  mount -o remount,bind,ro "$mp" 2>/dev/null
done < /proc/self/mountinfo
touch /.routecraft-ro-probe 2>/dev/null && { rm -f /.routecraft-ro-probe; echo "sandbox: / still writable" >&2; exit 98; }
unset OLDPWD
exec unshare --user -- "$@"
'''

_ns_lock = threading.Lock()
_ns_state: dict[str, Any] = {}


def _clean_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0"}


def _ns_prefix(workdir: str) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--user", "--map-root-user", "--mount", "--net", "--fork", "--kill-child",
            "/bin/sh", "-c", _NS_SETUP, "sh", workdir]


def namespaces_available() -> tuple[bool, str]:
    """Whether the namespace isolation works on this machine (probed once per process, then cached)."""
    with _ns_lock:
        if "ok" not in _ns_state:
            _ns_state["ok"], _ns_state["why"] = _probe_namespaces()
        return _ns_state["ok"], _ns_state["why"]


def _probe_namespaces() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"not Linux ({sys.platform})"
    if not (shutil.which("unshare") and shutil.which("mount") and os.path.exists("/bin/sh")):
        return False, "unshare/mount not found"
    w = os.path.realpath(tempfile.mkdtemp(prefix="routecraft-pal-probe-"))
    try:
        probe = ("import socket,os\n"
                 "try:\n socket.create_connection(('127.0.0.1', 9), timeout=1); print('net-open')\n"
                 "except OSError as e: print('net-closed')\n"
                 "try:\n open('/.routecraft-probe','w'); print('fs-open')\n"
                 "except OSError: print('fs-closed')\n"
                 "open('inside.txt','w').write('x'); print('inside-ok')\n")
        cmd = _ns_prefix(w) + [sys.executable, "-I", "-c", probe]
        p = subprocess.run(cmd, cwd=w, env=_clean_env(w), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=20)
        out = p.stdout.split()
        if p.returncode == 0 and out == ["net-closed", "fs-closed", "inside-ok"]:
            return True, "unshare user+mount+net namespaces work"
        return False, f"namespace probe failed (rc={p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}"
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"namespace probe failed: {e}"
    finally:
        shutil.rmtree(w, ignore_errors=True)


def run_python(code: str, timeout_s: float = 5, memory_mb: int = 256, *, isolation: Isolation = "auto",
               max_file_mb: int = 16, python: str | None = None, audit_hook: bool = True) -> SandboxResult:
    """Run ``code`` in a limited child process and return its ``solution()`` value.

    If the program defines no ``solution()``, a top-level ``result``/``answer``/``ans`` variable is used, else the last
    printed line. ``isolation``: "auto" (namespaces if they work here, else audit), "namespaces" (error if they do not
    work) or "audit" (audit hook + rlimits only). See the module docstring for what each layer enforces.
    ``audit_hook=False`` leaves the audit hook out; it exists so tests can show the namespace layer holds on its own.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a string, got {type(code).__name__}")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 32):
        raise ValueError(f"memory_mb must be an int >= 32, got {memory_mb!r}")
    if isolation not in ("auto", "namespaces", "audit"):
        raise ValueError(f"isolation must be 'auto', 'namespaces' or 'audit', got {isolation!r}")
    use_ns = False
    if isolation in ("auto", "namespaces"):
        ok, why = namespaces_available()
        if isolation == "namespaces" and not ok:
            raise RuntimeError(f"sandbox isolation='namespaces' is not available here: {why}")
        use_ns = ok
    mode = "namespaces" if use_ns else "audit"

    workdir = os.path.realpath(tempfile.mkdtemp(prefix="routecraft-pal-"))
    token = secrets.token_hex(8)
    t0 = time.perf_counter()
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        cpu = max(1, math.ceil(timeout_s))
        argv = [python or sys.executable, "-I", "-c", _BOOT, workdir, token, str(cpu),
                str(memory_mb * 1024 * 1024), str(max_file_mb * 1024 * 1024), "1" if audit_hook else "0"]
        cmd = (_ns_prefix(workdir) + argv) if use_ns else argv
        out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
            try:
                proc.wait(timeout=timeout_s + STARTUP_GRACE_S)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                proc.wait()
        rc = proc.returncode
        duration = time.perf_counter() - t0
        # a CPU-limit kill is a time-out too
        if rc is not None and rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL) and not timed_out \
                and duration >= min(cpu, timeout_s) * 0.8:
            timed_out = True
        res_path = os.path.join(workdir, f"result-{token}.json")
        stdout_tail = _read_tail(out_path, MAX_STDOUT_CHARS)
        if os.path.exists(res_path):
            try:
                with open(res_path, encoding="utf-8") as f:
                    r = json.load(f)
                return SandboxResult(ok=bool(r["ok"]), value=r.get("value"),
                                     stdout=(r.get("stdout") or "") + stdout_tail, error=r.get("error"),
                                     timed_out=timed_out, how=r.get("how"), returncode=rc, duration_s=duration,
                                     isolation=mode)
            except (ValueError, KeyError, OSError) as e:
                return SandboxResult(ok=False, stdout=stdout_tail, error=f"unreadable sandbox result: {e}",
                                     timed_out=timed_out, returncode=rc, duration_s=duration, isolation=mode)
        if timed_out:
            error = f"time limit exceeded ({timeout_s:g} s)"
        elif rc is not None and rc < 0:
            error = f"killed by {signal.Signals(-rc).name}"
        else:
            error = f"exited with status {rc} before returning a result"
        stderr_tail = _read_tail(err_path, 1000).strip()
        if stderr_tail and not timed_out:
            error += f": {stderr_tail.splitlines()[-1]}"
        return SandboxResult(ok=False, stdout=stdout_tail, error=error, timed_out=timed_out, returncode=rc,
                             duration_s=duration, isolation=mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _read_tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
