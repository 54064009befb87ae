"""Seccomp: each service's syscall allowlist, installed at start right after the capability drop.

The filter is built with libseccomp's own Python binding (Debian's python3-seccomp; `make venv`
links it into the virtualenv, the image installs it), never hand-written BPF. Anything not listed
fails with EPERM (not a kill: a missed syscall shows as an error in the service's log, never as a
service that vanished). Installed before the service starts a thread, so every thread inherits
it; the kernel stacks it under the runtime's own profile (RuntimeDefault in the DaemonSet).

What the lists leave out on purpose: namespaces and mounts (setns for the worker only; unshare,
mount, pivot_root, chroot, clone3 and namespace flags to clone), other processes' memory (ptrace,
process_vm_*), the kernel's extensions (bpf but for the worker, perf_event_open, modules, kexec, keyrings,
userfaultfd, io_uring), devices and time (mknod, iopl, settimeofday, ...), handles that bypass
paths (open_by_handle_at).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

# What a threaded Python service with ZeroMQ, gRPC, HTTP and files needs.
BASE = frozenset(
    """
    read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 open openat openat2 close
    close_range stat fstat lstat newfstatat statx fstatfs statfs access faccessat faccessat2 lseek
    mmap munmap mprotect mremap madvise brk msync mincore mlock munlock get_mempolicy
    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigtimedwait rt_sigqueueinfo rt_tgsigqueueinfo
    rt_sigsuspend sigaltstack kill tgkill tkill
    ioctl fcntl flock fsync fdatasync syncfs ftruncate truncate getdents getdents64 getcwd chdir fchdir
    rename renameat renameat2 mkdir mkdirat rmdir unlink unlinkat link linkat symlink symlinkat
    readlink readlinkat chmod fchmod fchmodat chown fchown lchown fchownat umask utimensat utime
    utimes futimesat fallocate fadvise64 sendfile copy_file_range splice tee
    dup dup2 dup3 pipe pipe2 eventfd eventfd2 epoll_create epoll_create1 epoll_ctl epoll_wait
    epoll_pwait epoll_pwait2 poll ppoll select pselect6 timerfd_create timerfd_settime
    timerfd_gettime signalfd signalfd4 inotify_init inotify_init1 inotify_add_watch inotify_rm_watch
    socket socketpair connect accept accept4 bind listen getsockname getpeername sendto recvfrom
    sendmsg recvmsg sendmmsg recvmmsg shutdown setsockopt getsockopt
    fork vfork execve execveat wait4 waitid exit exit_group set_tid_address set_robust_list
    get_robust_list futex futex_waitv rseq sched_yield sched_getaffinity sched_setaffinity
    sched_getparam sched_getscheduler sched_get_priority_max sched_get_priority_min getpriority
    setpriority nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday time times alarm
    pause getitimer setitimer timer_create timer_settime timer_gettime timer_delete timer_getoverrun
    restart_syscall getpid getppid gettid getuid geteuid getgid getegid getgroups getresuid
    getresgid getpgrp getpgid getsid setsid setpgid prctl arch_prctl uname sysinfo getrlimit
    setrlimit prlimit64 getrusage capget capset getrandom memfd_create membarrier
    sched_setscheduler sched_setparam sched_getattr sched_setattr
    setuid setgid setresuid setresgid setgroups setfsuid setfsgid
    """.split()
)
# The worker enters pod network namespaces (setns) and reads and detaches tcx programs (bpf).
# With --dhcp its children (nsenter, dhclient, the hook's shell) inherit this filter: BASE already
# has what they use (execve, fork/clone, wait4, packet and UDP sockets, bind), nothing is added.
EXTRA = {
    "netns": frozenset({"setns", "bpf"}),
    "discovery": frozenset(),
    "dra": frozenset(),
    "nri": frozenset(),
}

# clone flags that make new namespaces: refused (an unprivileged process could make a user
# namespace and hold capabilities inside it).
NAMESPACE_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


class SeccompUnavailable(RuntimeError):
    """The libseccomp Python binding is missing: install python3-seccomp (Debian)."""


def allowlist(service: str) -> frozenset[str]:
    return BASE | EXTRA.get(service, frozenset())


def install(service: str, extra: Iterable[str] = ()) -> int:
    """Load the service's filter on the calling thread (and the threads it starts later).
    Returns the number of syscalls allowed. Raises SeccompUnavailable."""
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError:
        raise SeccompUnavailable(
            "the libseccomp Python binding is not installed (Debian package python3-seccomp; "
            "`make venv` links it into the virtualenv)"
        ) from None
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    allowed = 0
    for name in sorted(allowlist(service) | set(extra)):
        try:
            f.add_rule(seccomp.ALLOW, name)
            allowed += 1
        except (RuntimeError, ValueError, OSError):
            log.debug("syscall unknown on this architecture", extra={"syscall": name})
    # Threads and processes, but no new namespaces; clone3 answers ENOSYS so libc falls back to clone.
    f.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, NAMESPACE_FLAGS, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    f.load()
    return allowed + 1
