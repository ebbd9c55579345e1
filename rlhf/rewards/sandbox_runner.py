"""The child side of rlhf.rewards.sandbox: run untrusted code and its tests, report each test.

Started as a script (``python -I -S -B sandbox_runner.py RESULT_FD``), never imported by the
package, so it loads nothing but the standard library. It reads its job as JSON from stdin, then,
before any untrusted line runs: sets hard resource limits (CPU, address space, file size, open
files, processes), gives up root if asked, and installs an audit hook (PEP 578) that denies
sockets, new processes, signals, writes outside the working directory, raising the limits,
and loading C code (ctypes). The verdicts go to RESULT_FD, each line tagged with a random token,
so printing or writing "passed" anywhere proves nothing. The code runs in this process, though,
and code written to cheat can still reach the token (frames) or fake equality: the sandbox
protects the machine, not the reward from a policy that learns to cheat (docs/rewards.md).

An audit hook is not a security boundary on its own (PEP 578 says so): the kernel limits, the
namespaces and the empty environment set up by the parent are the other layers.
"""

import json
import os
import resource
import signal
import sys

JOB_BYTES = 4_000_000  # the most stdin holds: code, setup and tests
DENIED_EVENTS = frozenset({
    # network (also cut by a network namespace where the parent could make one)
    "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
    "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
    # new processes and signals (a fork bomb; killing the trainer)
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
    # raising the limits back; changing identity
    "resource.setrlimit", "resource.prlimit", "os.setuid", "os.setgid", "os.chroot",
    # reading the parent's threads; loading C code, which no audit hook sees
    "sys._current_frames", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function",
})
PATH_EVENTS = frozenset({  # filesystem changes: allowed inside the working directory only
    "os.chmod", "os.chown", "os.link", "os.mkdir", "os.remove", "os.rename", "os.rmdir", "os.symlink",
    "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags", "os.lchmod",
})
DENIED_IMPORTS = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "cffi", "_testcapi", "_xxsubinterpreters"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def set_limits(limits: dict) -> None:
    """Hard limits (soft = hard, so the code cannot raise them; CPU gets SIGXCPU at the soft
    limit and SIGKILL a second later). Writes past the file-size limit fail with EFBIG instead of
    killing the process, so the output cap shows as an error the runner can report."""
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["output_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("processes") is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def make_audit_hook(workdir: str):
    """The hook: raise PermissionError("sandbox: ...") for every denied event. What it uses is
    bound here, as defaults, so the code cannot change the rules by replacing a builtin or a
    global of this module (it could still patch posixpath's internals: see docs/rewards.md)."""
    inside = workdir.rstrip("/") + "/"
    own_proc = f"/proc/{os.getpid()}/"

    def resolve(path, realpath=os.path.realpath, join=os.path.join, fsdecode=os.fsdecode) -> str:
        return realpath(join(workdir, fsdecode(path)))

    def hook(event, args, denied=DENIED_EVENTS, path_events=PATH_EVENTS, denied_imports=DENIED_IMPORTS,
             write_flags=WRITE_FLAGS, isinstance=isinstance, str=str, int=int,
             len=len, error=PermissionError, resolve=resolve, pathlike=(str, bytes, os.PathLike)):
        if event in denied:
            raise error(f"sandbox: {event} denied")
        if event == "import" and args and str(args[0]).split(".")[0] in denied_imports:
            raise error(f"sandbox: import {args[0]} denied")
        if event == "open" and args and isinstance(args[0], pathlike):
            mode = args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or \
                (isinstance(flags, int) and flags & write_flags)
            resolved = resolve(args[0])
            if writing and not (resolved + "/").startswith(inside):
                raise error(f"sandbox: writing {resolved!r} outside the working directory denied")
            # another process's /proc entry: its environment, memory, command line
            if resolved.startswith("/proc/") and not resolved.startswith((own_proc, "/proc/self/")) and \
                    resolved.split("/")[2].isdigit():
                raise error(f"sandbox: reading {resolved!r} denied")
        if event in path_events:
            for path in args[:2]:
                if isinstance(path, pathlike) and not (resolve(path) + "/").startswith(inside):
                    raise error(f"sandbox: {event} outside the working directory denied")

    return hook


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, without a traceback (formatting one would touch frames)."""
    text = f"{type(error).__name__}: {str(error)[:300]}"
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def main() -> None:
    # Everything the reporting needs is bound to locals here, before the code runs: the code can
    # replace module attributes (os._exit, builtins, this module's functions) but not this frame's locals.
    write, exit_, run, build, describe_, enumerate_ = os.write, os._exit, exec, compile, describe, enumerate
    result_fd = int(sys.argv[1])
    job = json.loads(os.read(0, JOB_BYTES).decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the code reads nothing from the parent
    os.close(null)
    token = job.pop("token")

    def report(kind: str, index: int = -1, passed: bool = False, error: str = "") -> None:
        """One tab-separated line: token, kind, test index, 1/0, error (no json: the code could patch it)."""
        write(result_fd, f"{token}\t{kind}\t{index}\t{'1' if passed else '0'}\t{error}\n".encode())

    def out_of_cpu(signum, frame) -> None:
        """SIGXCPU at the soft CPU limit: say so (the kernel's SIGKILL follows a second later).
        Also needed because in its own PID namespace this process is PID 1, which ignores
        signals it has no handler for."""
        report("cpu_limit")
        exit_(0)

    def out_of_time(signum, frame) -> None:
        """A backstop for the parent's wall clock, should the parent itself be killed: a program
        that sleeps uses no CPU, and nobody else would end it."""
        exit_(0)

    signal.signal(signal.SIGXCPU, out_of_cpu)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(job["limits"]["wall_s"]) + 2)
    set_limits(job["limits"])
    if job.get("cgroup"):  # join the run's pids cgroup (root: RLIMIT_NPROC does not bind root)
        with open(job["cgroup"] + "/cgroup.procs", "w") as procs:
            procs.write("0")
    if job.get("drop_uid") is not None:  # root: become an unprivileged user (limits then bind)
        os.setgroups([])
        os.setgid(job["drop_uid"])
        os.setuid(job["drop_uid"])
    if job.get("audit_hook", True):
        sys.addaudithook(make_audit_hook(os.path.realpath(job["workdir"])))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    for stage in ("code", "setup"):
        try:
            run(build(job[stage], f"<{stage}>", "exec"), namespace)
        except BaseException as e:  # noqa: BLE001 (SystemExit included: the code's fault, reported)
            report("code_error", error=stage + ": " + describe_(e))
            exit_(0)
    for index, test in enumerate_(job["tests"]):
        try:
            run(build(test, f"<test {index}>", "exec"), namespace)
            report("test", index, True)
        except BaseException as e:  # noqa: BLE001
            report("test", index, False, describe_(e))
    report("done")
    exit_(0)  # no atexit handlers, no flushing of what the code left behind


if __name__ == "__main__":
    main()
