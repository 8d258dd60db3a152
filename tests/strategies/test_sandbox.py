"""The PAL sandbox: each property is shown with a control (the same thing works where it is allowed) and, where this
machine has user namespaces, once per layer: the audit hook alone (isolation="audit"); the kernel namespaces alone
(strict with the audit hook and the seccomp filter off); the kernel layers (namespaces + seccomp, hook off); and
everything (what "auto" gives here). The attacks found on the gateway are in test_sandbox_escapes.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from routecraft.strategies.sandbox import STARTUP_GRACE_S, namespaces_available, run_python, unshare_lost_sigkill

NS_OK, NS_WHY = namespaces_available()
# Skipping would hide a broken strict sandbox: test_strict_isolation_is_available_here fails instead, unless a machine
# without user namespaces says so explicitly.
NO_STRICT_OK = os.environ.get("ROUTECRAFT_TEST_ALLOW_NO_STRICT_SANDBOX") == "1"
needs_ns = pytest.mark.skipif(not NS_OK, reason=f"no strict sandbox here: {NS_WHY}")

# (isolation, audit_hook, seccomp): the audit layer alone, the namespaces alone, the kernel layers (namespaces +
# seccomp), and all of them (what "auto" gives here)
LAYERS = [
    pytest.param("audit", True, True, id="audit-hook"),
    pytest.param("strict", False, False, id="namespaces-only", marks=needs_ns),
    pytest.param("strict", False, True, id="namespaces+seccomp", marks=needs_ns),
    pytest.param("strict", True, True, id="strict+audit", marks=needs_ns),
]


def test_strict_isolation_is_available_here():
    if NO_STRICT_OK:
        pytest.skip("ROUTECRAFT_TEST_ALLOW_NO_STRICT_SANDBOX=1")
    assert NS_OK, NS_WHY


def test_normal_solution_returns_value():
    r = run_python("def solution():\n    eggs = 16 - 3 - 4\n    print('eggs', eggs)\n    return eggs * 2\n")
    assert r.ok, r.error
    assert r.value == 18 and r.how == "solution" and r.stdout.startswith("eggs 9")
    assert not r.timed_out and r.error is None
    assert r.isolation == "strict"  # "auto" no longer falls back to audit (see test_sandbox_escapes.py)


@pytest.mark.parametrize("code,value", [
    ("from fractions import Fraction\ndef solution():\n    return Fraction(1, 2) + Fraction(1, 4)", "3/4"),
    ("def solution():\n    return 7 / 2", 3.5),
    ("def solution():\n    return 'B'", "B"),
    ("import math\ndef solution():\n    return [math.isqrt(49), {1, 2}]", [7, [1, 2]]),
    ("result = 6 * 7", 42),      # no solution(): a top-level result variable
    ("print(6 * 7)", "42"),       # nor that: the last printed line
])
def test_value_kinds(code, value):
    r = run_python(code, isolation="audit")
    assert r.ok, r.error
    assert r.value == value


@pytest.mark.parametrize("isolation,hook,sc", LAYERS)
def test_write_outside_temp_dir_fails_and_leaves_no_file(isolation, hook, sc):
    other = f"/tmp/routecraft-other-{uuid.uuid4().hex}"
    home = os.path.join(os.path.expanduser("~"), f"routecraft-home-{uuid.uuid4().hex}")
    for target in (other, home):
        code = f"def solution():\n    with open({target!r}, 'w') as f:\n        f.write('pwned')\n    return 1\n"
        r = run_python(code, isolation=isolation, audit_hook=hook, seccomp=sc)
        assert not r.ok and r.value is None
        assert ("refused" in r.error) if hook else ("Read-only file system" in r.error), r.error
        assert not os.path.exists(target), f"{target} was written"
    # control: writing inside the temp dir (the cwd) works under the same settings
    r = run_python("def solution():\n    open('scratch.txt', 'w').write('ok')\n    return open('scratch.txt').read()",
                   isolation=isolation, audit_hook=hook, seccomp=sc)
    assert r.ok and r.value == "ok", r.error


@pytest.mark.parametrize("isolation,hook,sc", LAYERS)
def test_os_mutators_outside_temp_dir_fail(isolation, hook, sc):
    victim = f"/tmp/routecraft-victim-{uuid.uuid4().hex}"
    with open(victim, "w") as f:
        f.write("keep")
    try:
        for op in (f"os.remove({victim!r})", f"os.rename({victim!r}, 'moved')", f"os.chmod({victim!r}, 0o777)",
                   f"os.mkdir({victim + '-dir'!r})"):
            r = run_python(f"import os\ndef solution():\n    {op}\n    return 1\n", isolation=isolation,
                           audit_hook=hook, seccomp=sc)
            assert not r.ok, op
        assert open(victim).read() == "keep" and oct(os.stat(victim).st_mode & 0o777) != oct(0o777)
        assert not os.path.exists(victim + "-dir")
    finally:
        os.remove(victim)


@pytest.mark.parametrize("isolation,hook,sc", LAYERS)
def test_socket_connect_to_open_local_port_fails(isolation, hook, sc):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # control: the port is open to us
        srv.accept()[0].close()
        code = (f"import socket\ndef solution():\n    s = socket.socket()\n    s.settimeout(2)\n"
                f"    s.connect(('127.0.0.1', {port}))\n    return 'connected'\n")
        r = run_python(code, isolation=isolation, audit_hook=hook, seccomp=sc)
        assert not r.ok and r.value is None
        # the first layer that stops it: the audit hook, else seccomp (socket() refused), else the empty network
        # namespace
        expected = "network access refused" if hook else ("Operation not permitted" if sc else "Network is unreachable")
        assert expected in r.error, r.error
        with pytest.raises(BlockingIOError):  # nobody reached the server
            srv.accept()
    finally:
        srv.close()


@pytest.mark.parametrize("isolation,hook,sc", LAYERS)
def test_busy_loop_is_killed_within_the_limit(isolation, hook, sc):
    t0 = time.perf_counter()
    r = run_python("def solution():\n    while True:\n        pass\n", timeout_s=1, isolation=isolation,
                   audit_hook=hook, seccomp=sc)
    elapsed = time.perf_counter() - t0
    assert r.timed_out and not r.ok and r.value is None
    assert elapsed < 1 + STARTUP_GRACE_S + 1.0, elapsed


@needs_ns
@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC=0 refuses threads unless the host uid is root (CI is)")
def test_cpu_limit_kill_of_a_multithreaded_burner_is_a_time_out():
    # Two threads hashing (hashlib releases the GIL) burn CPU faster than the wall clock on a multi-core machine, so
    # the RLIMIT_CPU hard limit's SIGKILL stops the program (PID 1 of its namespace) before the wall-clock deadline.
    # util-linux 2.38's `unshare --fork` then exits with status 1 ("sigprocmask unblock failed") instead of dying of
    # the signal; that must still read as a time-out, not as a program that exited (CI once saw the single-threaded
    # busy loop misread so, when the CPU limit won its race with the wall clock). Threads are refused by the audit
    # hook and seccomp, so this runs with the namespaces alone.
    code = ("import threading, hashlib\nbuf = b'x' * (16 * 1024 * 1024)\n"
            "def burn():\n    while True:\n        hashlib.sha256(buf).digest()\n"
            "def solution():\n    threading.Thread(target=burn, daemon=True).start()\n    burn()\n")
    r = run_python(code, timeout_s=3, isolation="strict", audit_hook=False, seccomp=False)
    assert r.timed_out and not r.ok and r.value is None, r
    assert r.error == "time limit exceeded (3 s)", r.error


@needs_ns
def test_unshare_losing_the_childs_sigkill_is_recognised():
    # The installed unshare, run the way the sandbox runs it: its child dies of SIGKILL (RLIMIT_CPU soft = hard = 1 s;
    # PID 1 of a namespace cannot ignore the kernel's SIGKILL). unshare either dies of the signal too (newer
    # util-linux) or exits 1 with the message the sandbox must recognise (2.36-2.38).
    child = "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 1))\nwhile True:\n    pass\n"
    p = subprocess.run([shutil.which("unshare"), "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--",
                        sys.executable, "-I", "-c", child], capture_output=True, text=True, timeout=30)
    assert p.returncode == -signal.SIGKILL or (p.returncode == 1 and unshare_lost_sigkill(p.stderr)), (p.returncode,
                                                                                                      p.stderr)
    # and an ordinary failure of unshare or the program is not taken for a kill
    assert not unshare_lost_sigkill("unshare: unshare failed: Operation not permitted\n")
    assert not unshare_lost_sigkill("Traceback ...\nValueError: sigprocmask unblock failed: Invalid argument\n")
    assert not unshare_lost_sigkill("")


def test_sleep_is_killed_by_the_wall_clock():
    t0 = time.perf_counter()
    r = run_python("import time\ndef solution():\n    time.sleep(60)\n", timeout_s=1)
    assert r.timed_out and "time limit" in r.error
    assert time.perf_counter() - t0 < 1 + STARTUP_GRACE_S + 1.0


@pytest.mark.parametrize("isolation,hook,sc", LAYERS)
def test_big_allocation_fails(isolation, hook, sc):
    r = run_python("def solution():\n    x = bytearray(1024 ** 3)\n    return len(x)\n", memory_mb=256,
                   isolation=isolation, audit_hook=hook, seccomp=sc)
    assert not r.ok and r.error.startswith("MemoryError")
    # control: a modest allocation under the same limit works
    r = run_python("def solution():\n    x = bytearray(50 * 1024 ** 2)\n    return len(x)\n", memory_mb=256,
                   isolation=isolation, audit_hook=hook, seccomp=sc)
    assert r.ok and r.value == 50 * 1024 ** 2, r.error


def test_processes_and_ctypes_are_refused():
    for code in ("import os\ndef solution():\n    return os.fork()",
                 "import subprocess\ndef solution():\n    return subprocess.run(['true']).returncode",
                 "import os\ndef solution():\n    return os.system('true')",
                 "import ctypes\ndef solution():\n    return ctypes.CDLL(None).getpid()",
                 "import threading\ndef solution():\n    threading.Thread(target=print).start()\n    return 1"):
        r = run_python(code)
        assert not r.ok and "refused" in r.error, (code, r.error)


def test_sympy_works_inside():
    r = run_python("import sympy as sp\ndef solution():\n    x = sp.symbols('x')\n"
                   "    return sp.solve(2*x + 3 - 11, x)[0]",
                   timeout_s=10, memory_mb=512)
    assert r.ok and r.value == 4, r.error


@needs_ns
@pytest.mark.parametrize("sc", [True, False], ids=["seccomp", "no-seccomp"])
def test_namespace_layer_cannot_be_undone_from_inside(sc):
    # with the audit hook off, the program can call mount(2) through ctypes; it holds no capability for it (and with
    # the seccomp filter on, mount(2) is refused before the capability check)
    code = ("import ctypes, os\ndef solution():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    rc = libc.mount(None, b'/', None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND, i.e. read-write\n"
            "    caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]\n"
            "    return [rc, ctypes.get_errno(), caps]\n")
    r = run_python(code, isolation="namespaces", audit_hook=False, seccomp=sc)
    assert r.ok, r.error
    assert r.value == [-1, 1, "0000000000000000"]  # EPERM, no effective capabilities
    assert r.isolation == "strict"  # "namespaces" is the old name of the strict mode


def test_errors_are_reported_with_the_line():
    r = run_python("def solution():\n    x = 1\n    return x / 0\n")
    assert not r.ok and r.error.startswith("ZeroDivisionError") and "line 3" in r.error
    r = run_python("def solution(:\n    return 1\n")
    assert not r.ok and r.error.startswith("SyntaxError")
    r = run_python("import sys\ndef solution():\n    sys.exit(0)\n")
    assert not r.ok and r.error.startswith("SystemExit")
    r = run_python("x = 1\n")
    assert not r.ok and "no solution()" in r.error


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("ROUTECRAFT_SECRET_TOKEN", "s3cret")
    r = run_python("import os\ndef solution():\n    return sorted(os.environ)")
    assert r.ok and "ROUTECRAFT_SECRET_TOKEN" not in r.value
    assert set(r.value) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                            "MKL_NUM_THREADS", "PYTHONHASHSEED", "PWD", "SHLVL", "_"}


def test_bad_arguments():
    with pytest.raises(TypeError):
        run_python(None)
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("x=1", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("x=1", memory_mb=1)
    with pytest.raises(ValueError, match="isolation"):
        run_python("x=1", isolation="docker")
    with pytest.raises(ValueError, match="unconfined"):
        run_python("x=1", isolation="audit", audit_hook=False)
