"""Run model-written Python (PAL) in a separate, confined process.

``run_python(code)`` writes the program into a fresh temp dir and runs ``python -I`` with a bootstrap that confines
itself, sets resource limits, reads the program, installs a seccomp filter and an audit hook, executes the program,
calls its ``solution()`` and writes the JSON-encoded return value to a result file.

Isolation modes (``run_python(isolation=...)``, ``ProgramAided.isolation``):

* ``"strict"`` (alias: ``"namespaces"``): kernel-enforced, see below. Probed once per process and interpreter
  (:func:`strong_isolation_available`).
* ``"audit"``: rlimits + the audit hook only. **Weak**: a Python-level guard, opt-in only.
* ``"auto"`` (default): ``"strict"`` where it works; where it does not it raises :class:`SandboxUnavailable` (why,
  and how to opt in), unless the operator opted in to the weak mode process-wide with
  ``allow_weak_isolation(True)``. It never falls back silently. The mode in force is logged once per process
  (logger ``routecraft.sandbox``) and recorded in ``SandboxResult.isolation``.

What ``"strict"`` enforces, and by what (all kernel mechanisms, set up by the bootstrap before the program is read):

* **Namespaces**: the child runs under ``unshare --user --map-root-user --mount --net --pid --uts --ipc --fork``.
  New network namespace: no interface but a down loopback (connect() fails with ENETUNREACH). New PID namespace:
  the program is PID 1 and can neither see nor signal any other process of the host (the gateway included). New
  UTS namespace (hostname "sandbox") and IPC namespace.
* **No read access outside the work dir and the Python runtime**: in its private mount namespace the bootstrap mounts
  a tmpfs, bind-mounts into it *read-only* exactly: ``sys.base_prefix``/``sys.prefix`` (and exec prefixes), the
  ``site-packages``/``dist-packages`` dirs on ``sys.path``, the directories of the shared libraries mapped into the
  interpreter (from /proc/self/maps) and the standard library dirs of the platform (``/lib64``, ``/usr/lib64``,
  ``/lib/<multiarch>``, ``/usr/lib/<multiarch>``; ``/lib`` and ``/usr/lib`` where there is no multiarch dir: that
  is where later ``dlopen``\\ s of extension modules look), symlinks mirrored (e.g. ``/lib -> usr/lib``);
  ``/dev/null``, ``/dev/zero``, ``/dev/urandom``; the work dir read-write; a fresh ``proc`` (read-only,
  ``subset=pid``: only the sandbox's own PID namespace, no /proc/sys, no sysrq-trigger). Then ``pivot_root`` into it,
  the old root is detached, and the tmpfs is re-mounted read-only. No /etc, no home, no /proc of other processes.
  Directories that only lead to a bind mount (``/``, ``/root``, ``/tmp``, ...) are mode 0111: they can be traversed
  but not listed. Paths outside the runtime (another temp dir, a file in /root) simply do not exist.
* **No capabilities**: before the program is read the bootstrap drops the bounding set and all effective/permitted/
  inheritable/ambient capabilities (so it cannot re-mount, pivot or chroot) and sets ``PR_SET_NO_NEW_PRIVS``.
* **seccomp-BPF filter** (installed from the bootstrap via ctypes ``prctl(PR_SET_SECCOMP)`` after the program was
  read, before it runs; x86_64 and aarch64, any other architecture makes strict mode unavailable; a foreign syscall
  ABI (i386/x32 on x86_64) is refused): EPERM for fork/vfork/execve/execveat, clone without ``CLONE_THREAD`` (or
  with namespace flags), clone3 (ENOSYS, so libc falls back to clone and threads still work), ptrace,
  process_vm_readv/writev, the mount family (mount, umount2, pivot_root, chroot, open_tree, move_mount, fs*,
  mount_setattr), unshare, setns, keyctl/add_key/request_key, bpf, perf_event_open, userfaultfd, io_uring (its
  operations would bypass the filter), socket/socketpair, kill/tgkill of any pid but its own, tkill, sigqueue,
  pidfd_*, kcmp, open_by_handle_at, reboot/kexec/modules/swap/acct/syslog/quotactl/clock and host-name setters.
  Why seccomp and not a non-root kernel uid (which would make RLIMIT_NPROC real): the interpreter lives under
  ``/root`` (mode 0700) here, so a non-root uid could not even start it without copying the runtime; and the
  process would still need a user namespace in which it is root to build the mount namespace. Seccomp holds
  whatever the uid; RLIMIT_NPROC = 0 is still set but Linux exempts kernel uid 0 from it.

Both modes:

* **Time**: the parent kills the whole process group after ``timeout_s`` (+ a start-up grace of
  ``STARTUP_GRACE_S``); RLIMIT_CPU (soft = ceil(timeout_s), hard = +1 s) is a second stop for busy loops (in strict
  mode the program is PID 1 of its namespace, which ignores SIGXCPU, so the hard limit's SIGKILL is that stop).
  Either stop reads as a time-out: a CPU-limit kill is recognised by the CPU seconds the child used (the kernel's
  rusage), also where util-linux 2.36-2.38 ``unshare`` reports its child's SIGKILL as exit status 1.
* **Memory**: RLIMIT_AS = ``memory_mb`` (address space; large allocations raise MemoryError).
* **Files**: RLIMIT_FSIZE (``max_file_mb``) bounds any file the program writes; RLIMIT_NOFILE = 64; RLIMIT_CORE = 0.
* **Environment**: scrubbed (PATH, LANG, HOME=TMPDIR=work dir, single-threaded BLAS): nothing of the parent's
  environment (API keys) is passed; ``-I`` ignores PYTHON* and the user site dir; stdin is /dev/null; only fds 0-2.
* **Audit hook** (PEP 578, an extra layer in strict mode, the only one in audit mode): refuses opening files for
  writing, and the ``os``/``shutil`` mutators, outside the work dir; *reading* or listing outside the work dir and
  the runtime roots; opening directories with ``os.open`` (so no ``dir_fd`` tricks); every ``socket.*`` event;
  ``ctypes`` calls and symbol look-ups (importing it is allowed: sympy does); fork/exec/spawn/subprocess/kill;
  threads (Python < 3.13 has no audit event for them: the thread-start functions are replaced);
  ``_posixsubprocess.fork_exec`` (it has no audit event: the function is replaced, and the module can be neither
  imported again nor created afresh through ``_imp``, whose originals only the hook holds); ``os.pidfd_open``,
  ``signal.pidfd_send_signal``, ``os.setpriority``/``sched_set*``/``setpgid``/``chroot`` (no audit events either:
  replaced); modules that reach files, sockets or the user database from C without audit events (``pwd``, ``spwd``,
  ``grp``, ``_sqlite3`` (ATTACH opens any file), ``readline``, ``syslog``, ``_posixshmem``, ``_multiprocessing``,
  ``_curses``, ...), sub-interpreters, ``_test*`` modules, ``cffi``; ``gc.get_objects``/``get_referrers``/
  ``get_referents``, ``sys.settrace``/``setprofile``/``addaudithook``, ``code.__new__``. The hook's state lives in
  closures over builtins captured at start-up, so monkeypatching ``os.path``, builtins or ``__main__`` does not
  change its decisions (path resolution is its own, on ``posix.lstat``/``readlink``).
  It is still a guard inside the attacked process, not a kernel boundary. Known gaps in audit mode: metadata calls
  without audit events (``os.stat``, ``os.readlink``, ``os.path.exists``) still probe the host (existence, sizes,
  link targets); a crafted code object from ``marshal.loads`` (allowed: imports use it) or a memory-safety bug in
  the interpreter or a C extension gets around the hook entirely. That is why ``"audit"`` is opt-in only.
* **Not bounded** (either mode): the number of files the program creates in its work dir (each is bounded by
  RLIMIT_FSIZE, the time limit bounds the total).

Resource limits are set by the bootstrap (before the program is read), not in ``preexec_fn``: ``preexec_fn`` is not
safe in a threaded parent and PAL extraction runs in worker threads.
"""

from __future__ import annotations

import errno
import json
import logging
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

Isolation = Literal["auto", "strict", "namespaces", "audit"]
ISOLATION_MODES = ("auto", "strict", "namespaces", "audit")

log = logging.getLogger("routecraft.sandbox")

SETUP_FAILED_RC = 97


class SandboxUnavailable(RuntimeError):
    """The requested (or, for ``"auto"``, the required strict) isolation cannot be provided on this machine."""


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
    isolation: str = ""             # "strict" or "audit": what was actually used

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------- seccomp tables
# syscall numbers from the kernel's uapi headers (asm/unistd_64.h for x86_64, asm-generic/unistd.h for aarch64)
_DENY_NAMES = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "socket", "socketpair", "tkill", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "kcmp", "process_madvise",
    "open_by_handle_at", "name_to_handle_at", "reboot", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "swapon", "swapoff", "acct", "syslog", "quotactl", "personality", "iopl",
    "ioperm", "uselib", "vhangup", "sethostname", "setdomainname", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "lookup_dcookie",
)
_SYSCALLS: dict[str, dict[str, Any]] = {
    "x86_64": {
        "audit_arch": 0xC000003E, "x32_bit": 0x40000000,
        "nr": {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
               "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
               "fsmount": 432, "fspick": 433, "mount_setattr": 442, "keyctl": 250, "add_key": 248,
               "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
               "io_uring_enter": 426, "io_uring_register": 427, "socket": 41, "socketpair": 53, "tkill": 200,
               "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434, "pidfd_send_signal": 424,
               "pidfd_getfd": 438, "kcmp": 312, "process_madvise": 440, "open_by_handle_at": 304,
               "name_to_handle_at": 303, "reboot": 169, "kexec_load": 246, "kexec_file_load": 320,
               "init_module": 175, "finit_module": 313, "delete_module": 176, "swapon": 167, "swapoff": 168,
               "acct": 163, "syslog": 103, "quotactl": 179, "personality": 135, "iopl": 172, "ioperm": 173,
               "uselib": 134, "vhangup": 153, "sethostname": 170, "setdomainname": 171, "settimeofday": 164,
               "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305, "lookup_dcookie": 212,
               "clone": 56, "clone3": 435, "kill": 62, "tgkill": 234},
    },
    "aarch64": {
        "audit_arch": 0xC00000B7, "x32_bit": 0,
        "nr": {"execve": 221, "execveat": 281, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
               "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
               "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
               "mount_setattr": 442, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
               "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
               "io_uring_register": 427, "socket": 198, "socketpair": 199, "tkill": 130, "rt_sigqueueinfo": 138,
               "rt_tgsigqueueinfo": 240, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
               "kcmp": 272, "process_madvise": 440, "open_by_handle_at": 265, "name_to_handle_at": 264,
               "reboot": 142, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
               "delete_module": 106, "swapon": 224, "swapoff": 225, "acct": 89, "syslog": 116, "quotactl": 60,
               "personality": 92, "vhangup": 58, "sethostname": 161, "setdomainname": 162, "settimeofday": 170,
               "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266, "lookup_dcookie": 18,
               "clone": 220, "clone3": 435, "kill": 129, "tgkill": 131},
    },
}


# ------------------------------------------------------------------------------------------------- bootstrap code
# Runs as `python -I -c BOOT <mode> <workdir> <rootdir> <token> <cpu_s> <mem_bytes> <fsize_bytes> <hook> <seccomp>
# <parent's home>`
# with cwd = workdir; mode "strict" runs it inside `unshare --user --map-root-user --mount --net --pid ... --fork`.
_BOOT = r'''
import sys, os
MODE, W, R, TOKEN = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], sys.argv[4]
CPU, MEM, FSIZE = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
AUDIT, SECCOMP = sys.argv[8] == "1", sys.argv[9] == "1"
HOMEDIR = os.path.realpath(sys.argv[10])
import io, json, math, signal, resource, contextlib, traceback, numbers, fractions, decimal
SYSCALLS = json.loads(__SYSCALLS__)
DENY_NAMES = __DENY__
SETUP_FAILED = __SETUPRC__

def _setup_failed(msg):
    try:
        os.write(2, ("sandbox: set-up failed: %s\n" % msg).encode("utf-8", "replace"))
    finally:
        os._exit(SETUP_FAILED)

_FORBIDDEN = {"/", "/etc", "/root", "/home", "/proc", "/sys", "/dev", "/tmp", "/var", "/run", "/boot", "/mnt",
              "/media", "/srv", "/opt", HOMEDIR}

def _forbidden_root(p):
    """A directory that must never be exposed as a whole (nor an ancestor of the work dir)."""
    return p in _FORBIDDEN or W == p or W.startswith(p.rstrip("/") + "/")

def _runtime_roots():
    """(path as the interpreter names it, real path) of every directory the interpreter may read."""
    prefixes = [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix]
    sites = [p for p in sys.path if p and os.path.basename(os.path.normpath(p)) in ("site-packages", "dist-packages")]
    libs, mapped = [], set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6:
                mapped.add(parts[5].strip())
    for path in sorted(mapped):
        if path.startswith("/") and ".so" in os.path.basename(path) and os.path.isfile(path):
            if os.path.dirname(path) not in libs:
                libs.append(os.path.dirname(path))
    ma = getattr(sys.implementation, "_multiarch", "") or ""
    std = ["/lib64", "/usr/lib64"] + (["/lib/" + ma, "/usr/lib/" + ma] if ma else [])
    std = [d for d in std if os.path.isdir(d)]
    if not any(ma and d.endswith("/" + ma) for d in std):
        std += [d for d in ("/lib", "/usr/lib") if os.path.isdir(d)]
    out, seen = [], set()
    for kind, group in (("prefix", prefixes), ("site", sites), ("lib", libs + std)):
        for p in group:
            p = os.path.normpath(os.path.abspath(p))
            if not os.path.isdir(p):
                continue
            real = os.path.realpath(p)
            if _forbidden_root(real) or _forbidden_root(p):
                if kind == "prefix":
                    raise OSError("the Python runtime lives in %r: will not expose that directory as a whole" % real)
                continue
            if (p, real) not in seen:
                seen.add((p, real))
                out.append((p, real))
    return out

def _strict_confine(roots):
    import ctypes
    arch = os.uname().machine
    if arch not in SYSCALLS or sys.maxsize <= 2 ** 32 or sys.byteorder != "little":
        raise OSError("unsupported architecture for the seccomp filter: %s" % arch)
    nr = SYSCALLS[arch]["nr"]
    libc = ctypes.CDLL(None, use_errno=True)
    ul, cp = ctypes.c_ulong, ctypes.c_char_p
    enc = lambda s: None if s is None else os.fsencode(s)

    def check(rc, what):
        if rc != 0:
            e = ctypes.get_errno()
            raise OSError(e, "%s: %s" % (what, os.strerror(e)))

    def mount(src, tgt, fstype, flags, data=None):
        check(libc.mount(cp(enc(src)), cp(enc(tgt)), cp(enc(fstype)), ul(flags), cp(enc(data))),
              "mount(%s, %s, %s, %#x)" % (src, tgt, fstype, flags))

    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
    ST_NOEXEC, ST_NOATIME, ST_NODIRATIME, ST_RELATIME = 8, 1024, 2048, 4096

    def remount(path, ro):
        # a bind mount in a user namespace must keep the (locked) flags of its source: copy them, add ro/nosuid/nodev
        fl = os.statvfs(path).f_flag
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if ro else 0)
        flags |= MS_NOEXEC if fl & ST_NOEXEC else 0
        flags |= MS_NOATIME if fl & ST_NOATIME else (MS_RELATIME if fl & ST_RELATIME else MS_STRICTATIME)
        flags |= MS_NODIRATIME if fl & ST_NODIRATIME else 0
        mount(None, path, None, flags)

    scaffold, mountpoints = [R], set()

    def mkdirs(d):
        todo = []
        while not os.path.lexists(d):
            todo.append(d)
            d = os.path.dirname(d)
        for x in reversed(todo):
            os.mkdir(x, 0o755)
            scaffold.append(x)

    def mirror_links(p, depth=0):
        # recreate the symlinks on the way to p (e.g. /lib -> usr/lib) inside the new root
        if depth > 8:
            return
        cur = ""
        for comp in p.strip("/").split("/"):
            nxt = cur + "/" + comp
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                if not os.path.lexists(R + nxt):
                    mkdirs(R + (cur or "/"))
                    os.symlink(target, R + nxt)
                mirror_links(os.path.normpath(os.path.join(cur or "/", target)), depth + 1)
                cur = os.path.realpath(nxt)
            else:
                cur = nxt

    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", R, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    bound = []
    for p, real in sorted(roots, key=lambda pr: pr[1]):
        if not any(real == b or real.startswith(b + "/") for b in bound):
            mkdirs(R + real)
            mountpoints.add(R + real)
            mount(real, R + real, None, MS_BIND)
            remount(R + real, True)
            bound.append(real)
        if p != real:
            mirror_links(p)
    mkdirs(R + W)
    mountpoints.add(R + W)
    mount(W, R + W, None, MS_BIND)
    remount(R + W, False)
    mkdirs(R + "/dev")
    for dev in ("null", "zero", "urandom"):
        open(R + "/dev/" + dev, "w").close()
        mount("/dev/" + dev, R + "/dev/" + dev, None, MS_BIND)
    os.mkdir(R + "/proc", 0o555)
    try:  # only this PID namespace's processes, and no global files (/proc/sys, sysrq-trigger, kcore, ...)
        mount("proc", R + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "subset=pid")
    except OSError:
        pass  # an older kernel: no /proc at all
    for d in scaffold:  # traversable, not listable (not the mount points: that would chmod what is mounted there)
        if d not in mountpoints:
            os.chmod(d, 0o111)
    os.chdir(R)
    check(libc.syscall(ul(nr["pivot_root"]), cp(b"."), cp(b".")), "pivot_root")
    check(libc.umount2(cp(b"."), ctypes.c_int(2)), "umount2(old root, MNT_DETACH)")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(W)
    check(libc.sethostname(cp(b"sandbox"), ul(7)), "sethostname")
    # drop every capability for good (the bounding set first: that needs CAP_SETPCAP)
    for cap in range(64):
        if libc.prctl(ctypes.c_int(24), ul(cap), ul(0), ul(0), ul(0)) != 0:  # PR_CAPBSET_DROP
            break
    libc.prctl(ctypes.c_int(47), ul(4), ul(0), ul(0), ul(0))  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    check(libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), (CapData * 2)()), "capset")
    check(libc.prctl(ctypes.c_int(38), ul(1), ul(0), ul(0), ul(0)), "prctl(PR_SET_NO_NEW_PRIVS)")
    return libc, arch

def _seccomp_install(libc, arch):
    import ctypes
    t = SYSCALLS[arch]
    nr = t["nr"]
    RET_ALLOW, RET_KILL, RET_EPERM, RET_ENOSYS = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    CLONE_THREAD = 0x00010000
    CLONE_NS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
    me = os.getpid()
    prog = []  # (code, jt, jf, k); jt/jf are labels or 0

    def emit(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    emit(LD, 4)                                   # seccomp_data.arch
    emit(JEQ, t["audit_arch"], 1, 0)
    emit(RET, RET_KILL)                           # a foreign syscall ABI (i386 via int 0x80, ...)
    emit(LD, 0)                                   # seccomp_data.nr
    if t["x32_bit"]:
        emit(JGE, t["x32_bit"], "deny", 0)        # x32 ABI numbers
    for name in DENY_NAMES:
        if name in nr:
            emit(JEQ, nr[name], "deny", 0)
    emit(JEQ, nr["clone3"], "enosys", 0)          # libc then falls back to clone(), which is checked below
    emit(JEQ, nr["clone"], "clone", 0)
    emit(JEQ, nr["kill"], "pid", 0)
    emit(JEQ, nr["tgkill"], "pid", 0)
    emit(RET, RET_ALLOW)
    labels = {}
    labels["clone"] = len(prog)
    emit(LD, 16)                                  # args[0] (flags), low 32 bits
    emit(JSET, CLONE_THREAD, 0, "deny")           # a new process: refused; a thread: fine
    emit(JSET, CLONE_NS, "deny", 0)
    emit(RET, RET_ALLOW)
    labels["pid"] = len(prog)
    emit(LD, 16)                                  # args[0]: the target pid, low 32 bits
    emit(JEQ, me, "allow", "deny")
    labels["allow"] = len(prog)
    emit(RET, RET_ALLOW)
    labels["deny"] = len(prog)
    emit(RET, RET_EPERM)
    labels["enosys"] = len(prog)
    emit(RET, RET_ENOSYS)

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    arr = (SockFilter * len(prog))()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise OSError("seccomp filter jump out of range")
        arr[i] = SockFilter(code, jt, jf, k)
    fprog = SockFprog(len(prog), arr)
    ul = ctypes.c_ulong
    if libc.prctl(ctypes.c_int(22), ul(2), ul(ctypes.addressof(fprog)), ul(0), ul(0)) != 0:  # SECCOMP_MODE_FILTER
        e = ctypes.get_errno()
        raise OSError(e, "prctl(PR_SET_SECCOMP): %s" % os.strerror(e))

def _install_audit(W, read_roots):
    """Install the audit hook. Everything it uses is captured here, so the program cannot change its decisions by
    monkeypatching modules or builtins; nothing outside this closure refers to it (gc introspection is refused)."""
    import posix, _stat, _imp
    _lstat, _stat_fn, _readlink, _getcwd, _audit = posix.lstat, posix.stat, posix.readlink, posix.getcwd, sys.audit
    _S_ISLNK, _S_ISDIR = _stat.S_ISLNK, _stat.S_ISDIR
    _str, _bytes, _int, _list, _type, _len, _isinstance = str, bytes, int, list, type, len, isinstance
    _PermissionError, _ImportError, _OSError = PermissionError, ImportError, OSError
    _sjoin, _bjoin = "".join, b"".join
    _create_builtin, _create_dynamic = _imp.create_builtin, _imp.create_dynamic
    WSEP = W + "/"
    ROOTS = tuple(r.rstrip("/") + "/" for r in read_roots)
    DEVS = frozenset(("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"))
    WFLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    PATH_EVENTS = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                   "os.chmod": ((0,), (2,)), "os.lchmod": ((0,), ()), "os.chown": ((0,), (3,)),
                   "os.lchown": ((0,), ()), "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)),
                   "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "os.setxattr": ((0,), ()),
                   "os.removexattr": ((0,), ()), "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
                   "os.symlink": ((1,), (2,)), "shutil.rmtree": ((0,), (1,)), "shutil.chown": ((0,), ()),
                   "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()), "shutil.copyfile": ((1,), ()),
                   "shutil.copytree": ((1,), ()), "shutil.move": ((0, 1), ()), "shutil.make_archive": ((0,), ()),
                   "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,))}
    PROC_EVENTS = frozenset(("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                             "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
                             "_thread.start_new_thread", "resource.setrlimit", "resource.prlimit", "os.startfile",
                             "webbrowser.open", "sys.remote_exec", "gc.get_objects", "gc.get_referrers",
                             "gc.get_referents", "sys.settrace", "sys.setprofile", "sys.addaudithook",
                             "code.__new__", "cpython.PyInterpreterState_New", "os.setns", "os.unshare"))
    LIST_EVENTS = frozenset(("os.listdir", "os.scandir"))
    # no audit events inside: process creation, sub-interpreters, C-level file/socket/user-database access
    BLOCKED_MODULES = frozenset(("cffi", "_cffi_backend", "_posixsubprocess", "_xxsubinterpreters",
                                 "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
                                 "_ctypes_test", "_xxtestfuzz", "_imp", "_thread", "posix", "_signal", "spwd", "pwd",
                                 "grp", "nis", "readline", "ossaudiodev", "_curses", "_curses_panel", "_tkinter",
                                 "_sqlite3", "syslog", "_posixshmem", "_multiprocessing"))

    def deny(what):
        raise _PermissionError("sandbox: " + what)

    def blocked_module(name):
        first, last = name.partition(".")[0], name.rpartition(".")[2]
        return (first in BLOCKED_MODULES or last in BLOCKED_MODULES or first.startswith("_test")
                or last.startswith("_test"))

    def as_str(p):
        if _type(p) is _str:
            return p
        if _isinstance(p, _str):
            return _sjoin((p,))
        if _isinstance(p, _bytes):
            return _bjoin((p,)).decode("utf-8", "surrogateescape")
        return None

    def resolve(p):
        """Absolute, symlink-free form of p (like os.path.realpath, non-strict), or None."""
        if not p.startswith("/"):
            p = _getcwd() + "/" + p
        todo = p.split("/")
        todo.reverse()
        out = []
        hops = 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                if out:
                    out.pop()
                continue
            cand = "/" + "/".join(out) + ("/" if out else "") + c
            try:
                st = _lstat(cand)
            except _OSError:
                out.append(c)
                continue
            if _S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    return None
                try:
                    t = _readlink(cand)
                except _OSError:
                    return None
                if t.startswith("/"):
                    out = []
                parts = t.split("/")
                parts.reverse()
                todo.extend(parts)
            else:
                out.append(c)
        return "/" + "/".join(out)

    def path_of(p):
        """The resolved path a path argument (str, bytes or an open descriptor) refers to, or None."""
        if _type(p) is _int:
            try:
                t = _readlink("/proc/self/fd/%d" % p)
            except _OSError:
                return None
            return t if t.startswith("/") else None
        s = as_str(p)
        return None if s is None else resolve(s)

    def inside(p):
        r = path_of(p)
        return r is not None and (r == W or r.startswith(WSEP))

    def readable(p):
        r = path_of(p)
        if r is None:
            return False
        if r == W or r.startswith(WSEP) or r in DEVS:
            return True
        for root in ROOTS:
            if r.startswith(root) or r + "/" == root:
                return True
        return False

    def hook(event, args):
        if event == "open":
            n = _len(args)
            path = args[0] if n > 0 else None
            mode = args[1] if n > 1 else None
            flags = args[2] if n > 2 else 0
            if _type(path) is _int:
                return  # wraps an already-open descriptor: its access mode is fixed
            if as_str(path) is None:
                deny("unsupported path type %s" % _type(path).__name__)
            if mode is not None and _type(mode) is not _str:
                deny("unsupported open mode")
            if _type(flags) is not _int:
                deny("unsupported open flags")
            wants_write = ((mode is not None and ("w" in mode or "a" in mode or "x" in mode or "+" in mode))
                           or (flags & WFLAGS) != 0)
            if wants_write:
                if not inside(path):
                    deny("write outside the work dir refused: %r" % (path,))
            elif not readable(path):
                deny("read outside the work dir and the Python runtime refused: %r" % (path,))
            if mode is None:  # os.open: no directory descriptors (dir_fd would bypass the path checks)
                try:
                    isdir = _S_ISDIR(_stat_fn(as_str(path)).st_mode)
                except _OSError:
                    isdir = False
                if isdir:
                    deny("opening a directory refused: %r" % (path,))
            return
        if event in PATH_EVENTS:
            pidx, fidx = PATH_EVENTS[event]
            for i in pidx:
                if i < _len(args) and not inside(args[i]):
                    deny("%s outside the work dir refused: %r" % (event, args[i]))
            for i in fidx:
                d = args[i] if i < _len(args) else None  # None, -1 (the default) and AT_FDCWD (-100) are fine
                if d is not None and not (_type(d) is _int and d < 0):
                    deny("%s with dir_fd refused" % event)
            return
        if event in LIST_EVENTS:
            p = args[0] if args else None
            if not readable("." if p is None else p):
                deny("%s outside the work dir and the Python runtime refused: %r" % (event, p))
            return
        if event.startswith("socket."):
            deny("network access refused (%s)" % event)
        if event.startswith("ctypes."):
            if event == "ctypes.dlopen" and args and args[0] is None:
                return  # `import ctypes` opens the running process itself (sympy imports ctypes); symbols stay refused
            deny("ctypes refused (%s)" % event)
        if event == "import":
            name = as_str(args[0]) if args else None
            if name is None or blocked_module(name):
                raise _ImportError("sandbox: import of %s refused" % (args[0] if args else "?",))
            return
        if event == "routecraft.create_module":  # raised by the _imp.create_* replacements below
            if _len(args) != 4 or _type(args[3]) is not _list:
                deny("bad module creation request")
            kind, name, origin, box = as_str(args[0]), as_str(args[1]), args[2], args[3]
            origin = None if origin is None else as_str(origin)
            if name is None or blocked_module(name):
                raise _ImportError("sandbox: creating module %s refused" % (args[1],))
            spec = _Spec(name, origin)
            box.append(_create_builtin(spec) if kind == "builtin" else _create_dynamic(spec))
            return
        if event in PROC_EVENTS or event.startswith("os.exec") or event.startswith("os.spawn"):
            deny("%s refused" % event)
        if event in ("sqlite3.connect", "dbm.open"):  # (_sqlite3 is refused above: ATTACH would open any file)
            p = args[0] if args else None
            if p not in (":memory:", b":memory:", "") and not inside(p):
                deny("%s outside the work dir refused" % event)

    class _Spec:
        __slots__ = ("name", "origin", "loader", "submodule_search_locations", "parent", "cached", "has_location")

        def __init__(self, name, origin):
            self.name, self.origin, self.loader, self.submodule_search_locations = name, origin, None, None
            self.parent, self.cached, self.has_location = name.rpartition(".")[0], None, origin is not None

    # _posixsubprocess.fork_exec raises no audit event: replace it before anything can hold on to it, and refuse
    # importing or creating that module afresh (the originals of _imp.create_* live only in the hook's closure).
    import _posixsubprocess, _thread, threading

    def _refuse(*a, **k):
        raise PermissionError("sandbox: process creation / control refused")

    _posixsubprocess.fork_exec = _refuse
    if "subprocess" in sys.modules:
        sys.modules["subprocess"]._fork_exec = _refuse
    # nor do these, which act on other processes by pid or on the root directory
    import signal as _sig, _signal
    for _m in (posix, os, _sig, _signal):
        for _n in ("pidfd_open", "pidfd_send_signal", "setpriority", "sched_setscheduler", "sched_setparam",
                   "sched_setaffinity", "setpgid", "chroot", "setns", "unshare"):
            if hasattr(_m, _n):
                setattr(_m, _n, _refuse)

    def create_builtin(spec):
        box = []
        _audit("routecraft.create_module", "builtin", spec.name, None, box)
        return box[0]

    def create_dynamic(spec, file=None):
        box = []
        _audit("routecraft.create_module", "dynamic", spec.name, spec.origin, box)
        return box[0]

    _imp.create_builtin, _imp.create_dynamic = create_builtin, create_dynamic
    # Python < 3.13 has no audit event for starting a thread: refuse it by replacing the entry points
    def _no_threads(*a, **k):
        raise PermissionError("sandbox: threads refused")
    for _m, _n in ((_thread, "start_new_thread"), (_thread, "start_new"), (_thread, "start_joinable_thread"),
                   (threading, "_start_new_thread"), (threading, "_start_joinable_thread")):
        if hasattr(_m, _n):
            setattr(_m, _n, _no_threads)
    sys.addaudithook(hook)

def _lim(r, soft, hard=None):
    try:
        resource.setrlimit(r, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass

try:
    ROOTS = _runtime_roots()
    if MODE == "strict":
        LIBC, ARCH = _strict_confine(ROOTS)
except BaseException as e:
    _setup_failed("%s: %s" % (type(e).__name__, e))
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
try:
    if MODE == "strict" and SECCOMP:
        _seccomp_install(LIBC, ARCH)
    LIBC = None
    if AUDIT:
        _install_audit(W, [real for _p, real in ROOTS])
except BaseException as e:
    _setup_failed("%s: %s" % (type(e).__name__, e))
del _strict_confine, _seccomp_install, _install_audit, _runtime_roots

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
'''
_BOOT = (_BOOT.replace("__MAXOUT__", str(MAX_STDOUT_CHARS)).replace("__SYSCALLS__", repr(json.dumps(_SYSCALLS)))
         .replace("__DENY__", repr(_DENY_NAMES)).replace("__SETUPRC__", str(SETUP_FAILED_RC)))

# ------------------------------------------------------------------------------------------------- process-wide state
_state_lock = threading.Lock()
_probe_cache: dict[str, tuple[bool, str]] = {}   # interpreter -> (strict works, why)
_weak_allowed = False
_announced: set[str] = set()


def allow_weak_isolation(allow: bool = True) -> None:
    """Operator opt-in, process-wide: let ``isolation="auto"`` use the weak ``"audit"`` mode where strict isolation is
    unavailable (instead of raising :class:`SandboxUnavailable`). Audit mode does not stop a determined program from
    reading host files; use it only where the PAL models are trusted or the host holds nothing secret."""
    global _weak_allowed
    with _state_lock:
        _weak_allowed = bool(allow)
    if allow:
        log.warning("PAL sandbox: weak isolation (audit hook only) allowed process-wide where strict is unavailable")


def weak_isolation_allowed() -> bool:
    return _weak_allowed


def _clean_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0"}


def strong_isolation_available(python: str | None = None, *, refresh: bool = False) -> tuple[bool, str]:
    """Whether ``isolation="strict"`` works here for ``python`` (default: this interpreter), and why (not).

    Runs a probe program in the strict sandbox once per process and interpreter (about 0.1-0.2 s) and checks that the
    kernel layers really hold; the answer is cached (``refresh=True`` probes again). Thread-safe."""
    key = python or sys.executable
    with _state_lock:
        if refresh or key not in _probe_cache:
            _probe_cache[key] = _probe_strict(key)
            if not _probe_cache[key][0]:
                log.warning("PAL sandbox: strict isolation is unavailable for %s: %s", key, _probe_cache[key][1])
        return _probe_cache[key]


def namespaces_available() -> tuple[bool, str]:
    """Old name of :func:`strong_isolation_available` (kept for callers of the previous API)."""
    return strong_isolation_available()


_PROBE = r'''
import os, socket, errno
def solution():
    out = {}
    def t(name, f):
        try:
            f()
            out[name] = "open"
        except OSError as e:
            out[name] = e.errno
    def fork():
        if os.fork() == 0:
            os._exit(0)
    t("etc", lambda: open("/etc/passwd").read())
    t("list_root", lambda: os.listdir("/"))
    t("fork", fork)
    t("socket", lambda: socket.socket())
    t("write", lambda: open("/routecraft-probe", "w"))
    open("inside.txt", "w").write("x")
    out["pid"] = os.getpid()
    out["procs"] = sorted(p for p in os.listdir("/proc") if p.isdigit()) if os.path.isdir("/proc") else []
    st = open("/proc/self/status").read() if os.path.exists("/proc/self/status") else "CapEff: 0"
    out["caps"] = int(st.split("CapEff:")[1].split()[0], 16)
    return out
'''


def _probe_strict(python: str) -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"not Linux ({sys.platform})"
    arch = os.uname().machine
    if arch not in _SYSCALLS:
        return False, f"no seccomp syscall table for the {arch} architecture"
    if not shutil.which("unshare"):
        return False, "the unshare command (util-linux) is not installed"
    try:
        r = _execute(_PROBE, "strict", timeout_s=15, memory_mb=512, max_file_mb=1, python=python, audit_hook=False,
                     seccomp=True)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"strict sandbox probe failed: {e}"
    if not r.ok:
        return False, f"strict sandbox probe failed: {r.error}"
    v = r.value if isinstance(r.value, dict) else {}
    want = {"etc": errno.ENOENT, "list_root": errno.EACCES, "fork": errno.EPERM, "socket": errno.EPERM,
            "write": errno.EROFS, "pid": 1, "caps": 0}
    bad = {k: v.get(k) for k, x in want.items() if v.get(k) != x}
    if v.get("procs") not in ([], ["1"]):
        bad["procs"] = v.get("procs")
    if bad:
        return False, f"strict sandbox probe: a layer does not hold: {bad}"
    return True, ("user+mount+net+pid namespaces, pivot_root into a minimal read-only root, no capabilities, "
                  f"seccomp filter ({arch})")


def resolve_isolation(isolation: Isolation = "auto", python: str | None = None) -> str:
    """The mode ``run_python(isolation=...)`` will use: ``"strict"`` or ``"audit"``; raises
    :class:`SandboxUnavailable` where that is not possible (``"auto"`` without strict isolation and without the
    weak opt-in, or ``"strict"``/``"namespaces"`` without strict isolation). The gateway can call it at start-up."""
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(map(repr, ISOLATION_MODES))}, got {isolation!r}")
    if isolation == "audit":
        return "audit"
    ok, why = strong_isolation_available(python)
    if ok:
        return "strict"
    if isolation == "auto" and _weak_allowed:
        return "audit"
    if isolation == "auto":
        raise SandboxUnavailable(
            f"the strict PAL sandbox is not available here: {why}. Without it, model-written programs would run "
            f"with only an audit hook, which is not a kernel boundary (a determined program may read host files: "
            f"keys, configs). To accept that, opt in explicitly: call "
            f"routecraft.strategies.sandbox.allow_weak_isolation(True) at start-up, or use isolation='audit'.")
    raise SandboxUnavailable(f"sandbox isolation={isolation!r} is not available here: {why}")


def _announce(mode: str, requested: str) -> None:
    if mode in _announced:
        return
    with _state_lock:
        if mode in _announced:
            return
        _announced.add(mode)
    if mode == "strict":
        log.info("PAL sandbox isolation in force: strict (%s)", strong_isolation_available()[1])
    else:
        log.warning("PAL sandbox isolation in force: audit (requested %r): an audit hook and rlimits only, no kernel "
                    "confinement; a determined program may read host files", requested)


def run_python(code: str, timeout_s: float = 5, memory_mb: int = 256, *, isolation: Isolation = "auto",
               max_file_mb: int = 16, python: str | None = None, audit_hook: bool = True,
               seccomp: bool = True) -> SandboxResult:
    """Run ``code`` in a confined child process and return its ``solution()`` value.

    If the program defines no ``solution()``, a top-level ``result``/``answer``/``ans`` variable is used, else the last
    printed line. ``isolation``: "auto" (strict; :class:`SandboxUnavailable` where strict is unavailable unless
    :func:`allow_weak_isolation` was called, then audit), "strict" (alias "namespaces"; :class:`SandboxUnavailable`
    where unavailable) or "audit" (audit hook + rlimits only: weak). See the module docstring for what each layer
    enforces. ``audit_hook=False`` (strict only) and ``seccomp=False`` leave those layers out; they exist so tests
    can show that the other layers hold on their own.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a string, got {type(code).__name__}")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 32):
        raise ValueError(f"memory_mb must be an int >= 32, got {memory_mb!r}")
    mode = resolve_isolation(isolation, python)
    if mode == "audit" and not audit_hook:
        raise ValueError("isolation='audit' with audit_hook=False would leave the program unconfined")
    _announce(mode, isolation)
    return _execute(code, mode, timeout_s=timeout_s, memory_mb=memory_mb, max_file_mb=max_file_mb, python=python,
                    audit_hook=audit_hook, seccomp=seccomp)


def _execute(code: str, mode: str, *, timeout_s: float, memory_mb: int, max_file_mb: int, python: str | None,
             audit_hook: bool, seccomp: bool) -> SandboxResult:
    base = os.path.realpath(tempfile.mkdtemp(prefix="routecraft-pal-"))
    workdir, rootdir = os.path.join(base, "work"), os.path.join(base, "root")
    os.mkdir(workdir, 0o700)
    os.mkdir(rootdir, 0o700)
    token = secrets.token_hex(8)
    t0 = time.perf_counter()
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        cpu = max(1, math.ceil(timeout_s))
        argv = [python or sys.executable, "-I", "-c", _BOOT, mode, workdir, rootdir, token, str(cpu),
                str(memory_mb * 1024 * 1024), str(max_file_mb * 1024 * 1024), "1" if audit_hook else "0",
                "1" if seccomp else "0", os.path.expanduser("~")]
        if mode == "strict":
            argv = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount", "--net", "--pid",
                    "--uts", "--ipc", "--fork", "--kill-child", "--"] + argv
        out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
            exited, cpu_used = _wait(proc, timeout_s + STARTUP_GRACE_S)
            if not exited:
                timed_out = True
                _kill_group(proc)
                proc.wait()
        rc = proc.returncode
        duration = time.perf_counter() - t0
        lost_sigkill = mode == "strict" and rc == 1 and unshare_lost_sigkill(_read_tail(err_path, 1000))
        if lost_sigkill:
            rc = -signal.SIGKILL
        # a CPU-limit kill is a time-out too: judged by the CPU seconds the child used where the kernel reported
        # them (a program burning several cores reaches the limit before the wall clock does), else by wall time
        if (rc is not None and rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL) and not timed_out
                and (cpu_used >= cpu * 0.9 if cpu_used is not None else duration >= min(cpu, timeout_s) * 0.8)):
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
        stderr_tail = "" if lost_sigkill else _read_tail(err_path, 1000).strip()
        if timed_out:
            error = f"time limit exceeded ({timeout_s:g} s)"
        elif rc == SETUP_FAILED_RC and "set-up failed" in stderr_tail:
            error = stderr_tail.splitlines()[-1]
            stderr_tail = ""
        elif rc is not None and rc < 0:
            error = f"killed by {signal.Signals(-rc).name}"
        else:
            error = f"exited with status {rc} before returning a result"
        if stderr_tail and not timed_out:
            error += f": {stderr_tail.splitlines()[-1]}"
        return SandboxResult(ok=False, stdout=stdout_tail, error=error, timed_out=timed_out, returncode=rc,
                             duration_s=duration, isolation=mode)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def unshare_lost_sigkill(stderr: str) -> bool:
    """True when ``stderr`` ends with the message util-linux ``unshare --fork`` (2.36-2.38) prints when the child it
    waits for was killed by SIGKILL: it tries to re-raise the child's signal on itself, ``signal(SIGKILL, SIG_DFL)``
    fails with EINVAL, and it exits with status 1 instead of dying of the signal. In strict mode the program is
    that child (PID 1 of its namespace), and the RLIMIT_CPU hard limit's SIGKILL is how a busy loop is stopped, so
    without this a CPU-limit kill read as "exited with status 1". Newer util-linux skips the re-raise for SIGKILL
    and dies of it, which the caller sees as a negative return code."""
    lines = stderr.strip().splitlines()
    return bool(lines) and lines[-1].startswith("unshare: ") and lines[-1].endswith(
        ("sigprocmask unblock failed: Invalid argument", "signal handler reset failed: Invalid argument"))


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[bool, float | None]:
    """Wait for the child to exit: (False, None) on time-out, else (True, CPU seconds the child and the descendants
    it waited for used, or None where not measured). With a pidfd the wake-up is immediate; Popen.wait(timeout)
    polls with sleeps of up to 50 ms, which was most of a trivial program's run time."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        try:
            proc.wait(timeout=timeout)
            return True, None
        except subprocess.TimeoutExpired:
            return False, None
    try:
        import select
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or poller.poll(max(1, math.ceil(left * 1000))):
                break
    finally:
        os.close(fd)
    if proc.returncode is None:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            pid = 0
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return True, usage.ru_utime + usage.ru_stime
    try:
        proc.wait(timeout=0)
        return True, None
    except subprocess.TimeoutExpired:
        return False, None


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
