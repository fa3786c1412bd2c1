"""python3 sandbox.py DIR COMMAND [ARG...]

Runs COMMAND (componentize-py) so that what it reads from the kernel about the files in
DIR, and the randomness it draws, are the same on every machine and at every run.

componentize-py pre-initialises CPython and snapshots its memory: whatever the
interpreter was told while importing ends up in the component, including the stale bytes
of objects it freed. `dev.sh build` runs this script on a fresh tmpfs mounted at DIR in a
mount namespace, so inode numbers, directory order, link counts and sizes are already the
same at every build. What a fresh file system cannot fix is handled here, with seccomp
and ptrace:

- stat, fstat, lstat and newfstatat answers for files on DIR's file system get a fixed
  device number (the tmpfs's own one is whatever the machine had free) and fixed access,
  modification and change times (the files componentize-py unpacks and writes are new);
- statx fails with ENOSYS, so callers fall back to those calls (and see no birth time);
- getrandom fills its buffer with zeros (the str hash secret, `random`'s seed and the
  host's own random state come from it);
- mkdirat relative to a directory descriptor (which only the guest uses) fails with
  EACCES, so CPython writes no bytecode caches while it imports.

Clocks are read through the vDSO, out of reach of seccomp: `dev.sh build` freezes them
with libfaketime, which also answers glibc's getrandom.

Linux on x86_64 or aarch64 only. Exits with COMMAND's status.
"""

import ctypes
import os
import platform
import signal
import struct
import sys

FIXED_DEV = 0x52430001
FIXED_TIME = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
for _f in (libc.process_vm_readv, libc.process_vm_writev):
    _f.restype = ctypes.c_ssize_t
    _f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Per architecture: audit arch, number of registers in NT_PRSTATUS, a function from the
# registers to (syscall number, args, return value), and the syscall numbers.
def _x86_64(r):
    return r[15], (r[14], r[13], r[12], r[7], r[9], r[8]), r[10]


def _aarch64(r):
    return r[8], tuple(r[0:6]), r[0]


ARCHES = {
    "x86_64": dict(
        audit=0xC000003E, nregs=27, regs=_x86_64,
        stat_buf={4: 1, 5: 1, 6: 1, 262: 2}, getrandom=318, statx=332, mkdirat=258,
    ),
    "aarch64": dict(
        audit=0xC00000B7, nregs=34, regs=_aarch64,
        stat_buf={80: 1, 79: 2}, getrandom=278, statx=291, mkdirat=34,
    ),
}
ARCH = ARCHES.get(platform.machine())

PTRACE_TRACEME, PTRACE_CONT, PTRACE_SYSCALL = 0, 7, 24
PTRACE_SETOPTIONS, PTRACE_GETREGSET = 0x4200, 0x4204
OPTIONS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x80 | 0x100000  # SYSGOOD, (V)FORK, CLONE, EXEC, SECCOMP, EXITKILL
EVENT_SECCOMP = 7
WALL = 0x40000000
AT_FDCWD = 0xFFFFFF9C
ENOSYS, EACCES = 38, 13


def seccomp_filter(a):
    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    allow, trace, errno = 0x7FFF0000, 0x7FF00000, 0x00050000

    def s(code, k):
        return struct.pack("HBBI", code, 0, 0, k)

    def j(k, jt, jf):
        return struct.pack("HBBI", jeq, jt, jf, k)

    prog = [s(ld_abs, 4), j(a["audit"], 1, 0), s(ret, allow), s(ld_abs, 0)]
    for nr in [*a["stat_buf"], a["getrandom"]]:
        prog += [j(nr, 0, 1), s(ret, trace)]
    prog += [j(a["statx"], 0, 1), s(ret, errno | ENOSYS)]
    # mkdirat: allowed with AT_FDCWD (the low half of its first argument), else EACCES.
    prog += [j(a["mkdirat"], 0, 4), s(ld_abs, 16), j(AT_FDCWD, 0, 1), s(ret, allow), s(ret, errno | EACCES)]
    prog += [s(ret, allow)]
    return b"".join(prog)


def child(argv, a):
    if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
        os._exit(126)
    os.kill(os.getpid(), signal.SIGSTOP)
    prog = ctypes.create_string_buffer(seccomp_filter(a))
    fprog = SockFprog(len(prog.raw) // 8, ctypes.addressof(prog))
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        os.write(2, b"sandbox.py: seccomp is not available\n")
        os._exit(126)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, f"sandbox.py: {argv[0]}: {e}\n".encode())
    os._exit(127)


def regs(tid, a):
    buf = (ctypes.c_uint64 * a["nregs"])()
    iov = IoVec(ctypes.addressof(buf), ctypes.sizeof(buf))
    if libc.ptrace(PTRACE_GETREGSET, tid, ctypes.c_void_p(1), ctypes.byref(iov)) != 0:
        return None
    return a["regs"](list(buf))


def vm(tid, addr, data, write):
    local = IoVec(ctypes.addressof(data), ctypes.sizeof(data))
    remote = IoVec(addr, ctypes.sizeof(data))
    f = libc.process_vm_writev if write else libc.process_vm_readv
    return f(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == ctypes.sizeof(data)


def fix_stat(tid, addr, dev):
    # struct stat has the same layout at these offsets on x86_64 and aarch64:
    # st_dev at 0, then st_atim, st_mtim, st_ctim (seconds, nanoseconds) from 72.
    buf = (ctypes.c_uint64 * 15)()
    if not vm(tid, addr, buf, False) or buf[0] != dev:
        return
    buf[0] = FIXED_DEV
    for i in (9, 11, 13):
        buf[i], buf[i + 1] = FIXED_TIME, 0
    vm(tid, addr, buf, True)


def zero(tid, addr, n):
    if n > 0:
        vm(tid, addr, (ctypes.c_char * n)(), True)


def supervise(pid, dev, a):
    libc.ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(OPTIONS))
    libc.ptrace(PTRACE_CONT, pid, None, None)
    pending = {}  # thread -> (syscall number, args) between its seccomp stop and syscall exit
    code = 1
    while True:
        try:
            tid, status = os.waitpid(-1, WALL)
        except ChildProcessError:
            return code
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            pending.pop(tid, None)
            if tid == pid:
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            continue
        if not os.WIFSTOPPED(status):
            continue
        sig, event = os.WSTOPSIG(status), status >> 16
        if sig == signal.SIGTRAP and event == EVENT_SECCOMP:
            r = regs(tid, a)
            if r:
                pending[tid] = r[:2]
                libc.ptrace(PTRACE_SYSCALL, tid, None, None)
                continue
        elif sig == signal.SIGTRAP | 0x80:
            call = pending.pop(tid, None)
            r = regs(tid, a) if call else None
            if r:
                nr, args = call
                ret = r[2]
                if ret < 1 << 63:  # not -errno
                    if nr == a["getrandom"]:
                        zero(tid, args[0], ret)
                    elif ret == 0:
                        fix_stat(tid, args[a["stat_buf"][nr]], dev)
        elif sig not in (signal.SIGTRAP, signal.SIGSTOP):
            libc.ptrace(PTRACE_CONT, tid, None, ctypes.c_void_p(sig))
            continue
        libc.ptrace(PTRACE_CONT, tid, None, None)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if ARCH is None:
        sys.exit(f"sandbox.py: {platform.machine()} is not supported (x86_64 and aarch64 are)")
    dev = os.stat(sys.argv[1]).st_dev
    pid = os.fork()
    if pid == 0:
        child(sys.argv[2:], ARCH)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSTOPPED(status):
        sys.exit("sandbox.py: ptrace is not available")
    sys.exit(supervise(pid, dev, ARCH))


if __name__ == "__main__":
    main()
