"""Run untrusted code (a policy's response) against tests in a sandboxed subprocess.

Why a subprocess and not ``exec``: the code may loop forever, allocate all memory, fork without
end, read the trainer's secrets, open sockets or write anywhere; none of that may stop or harm
the trainer. Each run gets, in layers (docs/rewards.md says what each one does and does not stop):

1. Kernel limits, set in the child before the code runs (hard, so it cannot raise them): CPU
   seconds (RLIMIT_CPU), address space (RLIMIT_AS), file size, which also caps its output
   (RLIMIT_FSIZE), open files, and for a non-root trainer the process count (RLIMIT_NPROC).
2. A wall-clock limit kept by the parent, which kills the child's whole session, and with it,
   where namespaces are available, the whole PID namespace (every process the code started).
3. Namespaces where ``unshare`` can make them (root, or unprivileged user namespaces): its own
   network (no interface but a down loopback: no network), PID space and /proc.
4. An empty environment, ``python -I`` (no user site, no PYTHON* variables), a fresh temporary
   directory as working directory, deleted afterwards; a root trainer's child gives up root when
   the interpreter is readable by an unprivileged user.
5. An audit hook in the child (sandbox_runner.py) denying sockets, new processes, signals,
   writes outside its directory, other processes' /proc entries, raising limits, and ctypes.

The reward is the share of tests passed; ``ExecutionResult.reason`` says why it is not 1.
"""

from __future__ import annotations

import functools
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
NOBODY = 65534
RESULT_BYTES = 1 << 16  # the most read from the result pipe; the rest is drained and dropped
OUTPUT_TAIL = 2000  # characters of the code's output kept for the detail of a failure
REASONS = ("ok", "tests_failed", "syntax_error", "error", "denied", "timeout", "cpu_limit", "memory_limit",
           "output_limit", "exited", "crashed", "no_tests")


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. The defaults suit unit-test-sized programs."""

    timeout_s: float = 5.0  # wall clock, kept by the parent
    cpu_s: int = 5  # CPU seconds (RLIMIT_CPU): SIGXCPU, then SIGKILL one second later
    memory_mb: int = 512  # address space (RLIMIT_AS); Python itself takes ~20 MiB of it
    output_bytes: int = 1_000_000  # largest file it may write, its stdout/stderr included (RLIMIT_FSIZE)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 16  # processes it may add (RLIMIT_NPROC, over what its user runs already)

    def child_limits(self, user_processes: int | None) -> dict:
        return {"cpu_s": self.cpu_s, "wall_s": self.timeout_s, "memory_bytes": self.memory_mb << 20,
                "output_bytes": self.output_bytes,
                "open_files": self.open_files,
                "processes": None if user_processes is None else user_processes + self.processes}


@dataclass
class ExecutionResult:
    """How one response did: ``passed`` of ``total`` tests, and why not all (``reason``, one of
    REASONS, with ``detail``: the error, or the tail of the code's output)."""

    passed: int
    total: int
    reason: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def reward(self) -> float:
        return self.passed / self.total if self.total else 0.0


@functools.lru_cache(maxsize=1)
def isolation() -> tuple[tuple[str, ...], int | None]:
    """(the ``unshare`` prefix that gives a child its own network, PID space and /proc, or () when
    this machine cannot make namespaces; the uid a root parent's child switches to, or None)."""
    prefix: tuple[str, ...] = ()
    unshare = shutil.which("unshare") or ("/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else None)
    if unshare and sys.platform.startswith("linux"):
        user = () if os.geteuid() == 0 else ("--user", "--map-root-user")
        candidate = (unshare, *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc")
        try:
            probe = subprocess.run([*candidate, "true"], env={}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10)
            if probe.returncode == 0:
                prefix = candidate
        except (OSError, subprocess.SubprocessError):
            pass
    drop_uid = NOBODY if os.geteuid() == 0 and _readable_by_others() else None
    return prefix, drop_uid


def layers() -> dict[str, object]:
    """Which of the layers this machine gives (docs/rewards.md; logged by tests): namespaces,
    the uid a root parent's child switches to, and what caps the process count in the kernel."""
    prefix, drop_uid = isolation()
    if os.geteuid() != 0 or drop_uid is not None:
        process_cap = "RLIMIT_NPROC"
    else:
        process_cap = "cgroup pids.max" if _pids_cgroup_root() is not None else None
    return {"namespaces": bool(prefix), "root": os.geteuid() == 0, "drop_uid": drop_uid, "process_cap": process_cap}


def _readable_by_others() -> bool:
    """Whether an unprivileged user can run this interpreter and import its standard library and
    the runner (every folder on the way searchable by others): only then may a root parent's child
    give up root (in a container whose Python sits under /root it cannot)."""
    paths = [Path(sys.executable).resolve(), Path(sysconfig.get_paths()["stdlib"]).resolve(), RUNNER.resolve()]
    for path in paths:
        for folder in [*path.parents, path] if path.is_dir() else path.parents:
            if not os.stat(folder).st_mode & 0o001:
                return False
        if not path.is_dir() and not os.stat(path).st_mode & 0o004:
            return False
    return True


PIDS_CGROUPS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1's pids hierarchy, v2's root


@functools.lru_cache(maxsize=1)
def _pids_cgroup_root() -> Path | None:
    """A pids cgroup folder this (root) process may make children in, or None. For root the
    kernel ignores RLIMIT_NPROC; a cgroup's pids.max is then what caps a fork bomb."""
    if os.geteuid() != 0:
        return None
    for root in PIDS_CGROUPS:
        probe = root / f"rlhf-sandbox-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if (probe / "pids.max").exists():
                return root
        finally:
            probe.rmdir()
    return None


def _make_pids_cgroup(processes: int) -> Path | None:
    root = _pids_cgroup_root()
    if root is None:
        return None
    try:
        group = Path(tempfile.mkdtemp(prefix="rlhf-sandbox-", dir=root))
        (group / "pids.max").write_text(str(processes))
        return group
    except OSError:
        return None


def _remove_cgroup(group: Path | None) -> None:
    """rmdir the cgroup once its processes are gone (killed ones take a moment to be reaped)."""
    for _ in range(50):
        try:
            if group is not None:
                group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _user_processes() -> int | None:
    """How many processes this (non-root) user runs now, so RLIMIT_NPROC can allow a few more:
    the limit counts all of a user's processes, not the child's alone. None for root, for whom
    the kernel ignores RLIMIT_NPROC."""
    if os.geteuid() == 0:
        return None
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += os.stat(entry.path).st_uid == uid
            except OSError:
                pass
    return count


def run_tests(code: str, tests: list[str], limits: SandboxLimits = SandboxLimits(), setup: str = "",
              audit_hook: bool = True) -> ExecutionResult:
    """Run ``code``, then ``setup``, then each test (a statement, e.g. an assert) in one sandboxed
    child; a test passes when it runs without raising. Never raises for anything the code does.
    ``audit_hook=False`` leaves out the Python-level layer: only to test that the kernel's hold."""
    if not tests:
        return ExecutionResult(0, 0, "no_tests", "the record has no tests")
    prefix, drop_uid = isolation()
    workdir = Path(tempfile.mkdtemp(prefix="rlhf-sandbox-"))
    cgroup = _make_pids_cgroup(limits.processes + 1) if drop_uid is None else None  # + 1: the runner
    start = time.monotonic()
    try:
        if drop_uid is not None:
            os.chown(workdir, drop_uid, drop_uid)
        token = secrets.token_hex(16)
        job = {"token": token, "code": code, "setup": setup, "tests": list(tests), "workdir": str(workdir),
               "limits": limits.child_limits(_user_processes()), "drop_uid": drop_uid,
               "cgroup": str(cgroup) if cgroup else None, "audit_hook": audit_hook}
        lines, timed_out, returncode = _run_child(prefix, job, workdir, limits.timeout_s)
        output = _tail(workdir / "output.txt")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_cgroup(cgroup)
    result = _verdict(lines, token, len(tests), timed_out, returncode, output, limits)
    result.seconds = time.monotonic() - start
    return result


def _run_child(prefix: tuple[str, ...], job: dict, workdir: Path, timeout_s: float) -> tuple[list[str], bool, int]:
    """Start the runner, hand it the job, collect its result lines until it exits or the wall
    clock runs out (then kill its session and namespace): (lines, timed_out, return code)."""
    import json  # the job travels as JSON on stdin; the verdicts come back on a pipe of their own

    read_end, write_end = os.pipe()
    command = [*prefix, sys.executable, "-I", "-S", "-B", str(RUNNER), str(write_end)]
    with open(workdir / "output.txt", "wb") as output:
        if job["drop_uid"] is not None:
            os.chown(workdir / "output.txt", job["drop_uid"], job["drop_uid"])
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
                                cwd=workdir, env={}, pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        data, timed_out = _read_until(read_end, time.monotonic() + timeout_s)
        if not timed_out:
            try:
                proc.wait(timeout=max(0.5, timeout_s / 10))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        _kill_session(proc)
        os.close(read_end)
    return data.decode("utf-8", "replace").splitlines(), timed_out, proc.returncode


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Read ``fd`` to its end (every writer gone) or the deadline, keeping RESULT_BYTES at most."""
    chunks, size = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 14)
        if not chunk:
            return b"".join(chunks), False
        if size < RESULT_BYTES:
            chunks.append(chunk[:RESULT_BYTES - size])
            size += len(chunks[-1])


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the child's session (its process group): with namespaces this kills unshare, whose
    --kill-child takes down the namespace's first process and so, by the kernel, all in it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - OUTPUT_TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _verdict(lines: list[str], token: str, total: int, timed_out: bool, returncode: int | None, output: str,
             limits: SandboxLimits) -> ExecutionResult:
    """The result from the runner's token-tagged lines (untagged lines are the code's and ignored)."""
    passed, errors, code_error, done, out_of_cpu = set(), [], "", False, False
    for line in lines:
        parts = line.split("\t", 4)
        if len(parts) != 5 or parts[0] != token:
            continue
        kind, index, ok, error = parts[1], parts[2], parts[3], parts[4]
        if kind == "test" and index.isdigit() and int(index) < total:
            (passed.add(int(index)) if ok == "1" else errors.append(error))
        elif kind == "code_error":
            code_error = error
        elif kind == "done":
            done = True
        elif kind == "cpu_limit":
            out_of_cpu = True
    first_error = code_error or (errors[0] if errors else "")
    if len(passed) == total:
        return ExecutionResult(total, total, "ok")
    reason, detail = _reason(first_error, done, timed_out, returncode, limits, out_of_cpu)
    return ExecutionResult(len(passed), total, reason, detail or first_error or output[-500:])


def _reason(error: str, done: bool, timed_out: bool, returncode: int | None, limits: SandboxLimits,
            out_of_cpu: bool = False) -> tuple[str, str]:
    """Why not every test passed: the first cause that applies, most specific first."""
    signal_number = -returncode if returncode is not None and returncode < 0 else (
        returncode - 128 if returncode is not None and returncode > 128 else 0)
    if "MemoryError" in error:
        return "memory_limit", f"{error} (limit {limits.memory_mb} MiB)"
    if "sandbox:" in error:
        return "denied", error
    if "File too large" in error or "[Errno 27]" in error:
        return "output_limit", f"{error} (limit {limits.output_bytes} bytes)"
    if "SyntaxError" in error or "IndentationError" in error:
        return "syntax_error", error
    if error.startswith(("code:", "setup:")):
        return "error", error
    if done:
        return "tests_failed", error
    if out_of_cpu or signal_number == signal.SIGXCPU:
        return "cpu_limit", f"stopped after {limits.cpu_s} s of CPU time"
    if timed_out:
        return "timeout", f"stopped after {limits.timeout_s} s of wall-clock time"
    if signal_number:
        return "crashed", f"killed by signal {signal_number}"
    return "exited", error or f"the code ended the process (exit status {returncode}) before the tests finished"


def run_many(programs: list[tuple[str, str, list[str]]], limits: SandboxLimits = SandboxLimits(),
             max_workers: int | None = None) -> list[ExecutionResult]:
    """``run_tests`` on each (code, setup, tests), several children at a time (at most
    ``max_workers``, default: the CPU count, up to 8), results in order."""
    workers = max_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(programs) or 1))) as pool:
        return list(pool.map(lambda p: run_tests(p[0], p[2], limits, p[1]), programs))
