"""The sandbox that runs a policy's code against tests (rlhf.rewards.sandbox): hostile programs
are stopped or denied, the calling process keeps running, nothing is written outside the run's
folder and no process is left behind. Limits are small so that the file runs in seconds."""

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from rlhf.rewards.sandbox import PIDS_CGROUPS, RUNNER, SandboxLimits, layers, run_many, run_tests

FAST = SandboxLimits(timeout_s=5, cpu_s=1, memory_mb=256, output_bytes=100_000, processes=4)
ADD = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]


def sandbox_processes() -> list[int]:
    """Processes still running the sandbox's runner (there must be none between runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if str(RUNNER).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def leftovers() -> set[str]:
    """Sandbox folders and cgroups that exist now."""
    places = [Path(tempfile.gettempdir()), *[p for p in PIDS_CGROUPS if p.is_dir()]]
    return {str(p) for place in places for p in place.glob("rlhf-sandbox-*")}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = leftovers()
    yield
    assert sandbox_processes() == [], "a sandboxed process outlived its run"
    assert leftovers() - before == set(), "a sandbox folder or cgroup was left behind"


def test_the_share_of_tests_passed_is_the_reward():
    full = run_tests("def add(a, b):\n    return a + b", ADD, FAST)
    half = run_tests("def add(a, b):\n    return 3", ADD, FAST)  # right for (1, 2) only
    assert (full.passed, full.total, full.reward, full.reason) == (2, 2, 1.0, "ok")
    assert (half.passed, half.reward, half.reason) == (1, 0.5, "tests_failed")
    assert half.detail.startswith("AssertionError")


@pytest.mark.parametrize("code, reason, detail", [
    ("def add(a, b) return a + b", "syntax_error", "code: SyntaxError"),
    ("raise ValueError('no')", "error", "code: ValueError: no"),
    ("import os\nos._exit(0)", "exited", "the code ended the process"),
])
def test_a_broken_program_scores_zero_with_its_reason(code, reason, detail):
    result = run_tests(code, ADD, FAST)
    assert (result.passed, result.reason) == (0, reason)
    assert result.detail.startswith(detail)


def test_no_tests_is_said_not_run():
    assert run_tests("x = 1", [], FAST).reason == "no_tests"


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    result = run_tests("while True:\n    pass", ADD, SandboxLimits(timeout_s=30, cpu_s=1))
    assert (result.reward, result.reason) == (0.0, "cpu_limit")
    assert result.seconds < 30  # the CPU limit (1 s of CPU; longer in wall time on a busy machine)


def test_a_sleeping_program_is_stopped_by_the_wall_clock():
    start = time.monotonic()
    result = run_tests("import time\ntime.sleep(60)", ADD, SandboxLimits(timeout_s=1, cpu_s=5))
    assert (result.reward, result.reason) == (0.0, "timeout")
    assert time.monotonic() - start < 10


def test_fork_bomb_is_denied():
    result = run_tests("import os\nwhile True:\n    os.fork()", ADD, FAST)
    assert (result.reward, result.reason) == (0.0, "denied")
    assert "os.fork denied" in result.detail


FORK_UNTIL_REFUSED = """
import os, time
n = 0
while n < 1000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
"""


@pytest.mark.skipif(layers()["process_cap"] is None, reason="root without a writable pids cgroup: no kernel cap")
def test_fork_bomb_is_capped_by_the_kernel_even_without_the_audit_hook():
    """The kernel layer alone (cgroup pids.max for root, RLIMIT_NPROC otherwise): forks beyond
    FAST.processes fail, and the sleeping children die with the run (the fixture checks)."""
    result = run_tests(FORK_UNTIL_REFUSED, ["assert 1 <= n <= 4, n"], FAST, audit_hook=False)
    assert (result.reward, result.reason) == (1.0, "ok"), result


def test_memory_bomb_is_stopped():
    result = run_tests("x = bytearray(4 * 1024 ** 3)", ADD, FAST)
    assert (result.reward, result.reason) == (0.0, "memory_limit")


def test_writing_outside_its_folder_is_denied_and_inside_allowed(tmp_path):
    target = tmp_path / "escaped.txt"
    outside = run_tests(f"open({str(target)!r}, 'w').write('x')", ADD, FAST)
    assert (outside.reward, outside.reason) == (0.0, "denied")
    assert not target.exists()
    relative = run_tests("import os\nos.makedirs('../../escaped_dir')", ADD, FAST)
    assert relative.reason == "denied"
    inside = run_tests("open('notes.txt', 'w').write('x')\ndef read():\n    return open('notes.txt').read()",
                       ["assert read() == 'x'"], FAST)
    assert inside.reward == 1.0


LEAK = """
import os
def leak():
    found = dict(os.environ)
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                found[pid] = open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')
            except Exception:
                pass
    return str(found)
"""


@pytest.mark.parametrize("audit_hook", [True, False])
def test_the_parents_environment_is_invisible(monkeypatch, audit_hook):
    if not audit_hook and not layers()["namespaces"]:
        pytest.skip("without namespaces, /proc of the parent is hidden by the audit hook alone")
    monkeypatch.setenv("RLHF_TEST_SECRET", "hunter2-s3cret")
    # An empty environment but for LC_CTYPE, which Python's C-locale coercion (PEP 538) sets itself.
    result = run_tests(LEAK, ["assert 'hunter2-s3cret' not in leak()",
                              "assert set(os.environ) <= {'LC_CTYPE'}, dict(os.environ)"], FAST, audit_hook=audit_hook)
    assert result.reward == 1.0, result


def test_opening_a_socket_is_denied():
    result = run_tests("import socket\nsocket.socket()", ADD, FAST)
    assert (result.reward, result.reason) == (0.0, "denied")
    assert "socket.__new__ denied" in result.detail


@pytest.mark.skipif(not layers()["namespaces"], reason="no network namespace on this machine")
def test_no_network_even_without_the_audit_hook():
    """The network namespace alone: the parent's listening socket on loopback is unreachable."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\ndef reach():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        result = run_tests(code, ["reach()"], FAST, audit_hook=False)
        assert (result.reward, result.reason) == (0.0, "tests_failed"), result
        assert "unreachable" in result.detail or "refused" in result.detail or "timed out" in result.detail
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected


def test_output_is_bounded():
    result = run_tests("print('x' * 10_000_000)", ADD, FAST)
    assert (result.reward, result.reason) == (0.0, "output_limit")


def test_forged_verdicts_are_ignored():
    """Lines the code prints or writes to inherited descriptors lack the run's token."""
    fake = "x\\ttest\\t0\\t1\\t\\nx\\ttest\\t1\\t1\\t\\nx\\tdone\\t-1\\t0\\t\\n"  # "both tests passed", wrong token
    code = (f"import os\nfake = '{fake}'\nprint(fake)\n"
            "for fd in range(3, 32):\n    try:\n        os.write(fd, fake.encode())\n    except OSError:\n        pass\n")
    assert run_tests(code, ADD, FAST).reward == 0.0


def test_many_programs_run_in_parallel_in_order():
    programs = [("import time\ntime.sleep(1)\ndef add(a, b):\n    return a + b", "", ADD),
                ("import time\ntime.sleep(1)\ndef add(a, b):\n    return 3", "", ADD),
                ("import time\ntime.sleep(1)\nadd = 3", "", ADD),
                ("import time\ntime.sleep(1)\ndef add(a, b):\n    return a + b", "", ADD[:1])]
    start = time.monotonic()
    results = run_many(programs, SandboxLimits(timeout_s=10, cpu_s=2), max_workers=4)
    elapsed = time.monotonic() - start
    assert [r.reward for r in results] == [1.0, 0.5, 0.0, 1.0]
    assert [r.reason for r in results] == ["ok", "tests_failed", "tests_failed", "ok"]
    assert elapsed < 3.5  # four 1-second sleeps side by side, not one after the other (4 s)


def test_a_child_left_alone_ends_by_itself(tmp_path):
    """Should the trainer die (nobody to keep the wall clock), a sleeping program still ends: the
    runner's own alarm at the wall-clock limit + 2 s. The runner is started by hand here."""
    import json
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    job = {"token": "t", "code": "import time\ntime.sleep(60)", "setup": "", "tests": ["pass"],
           "workdir": str(tmp_path), "limits": SandboxLimits(timeout_s=1).child_limits(None), "drop_uid": None}
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(RUNNER), str(write_end)], stdin=subprocess.PIPE,
                             pass_fds=(write_end,), cwd=tmp_path, env={})
    os.close(write_end)
    child.stdin.write(json.dumps(job).encode())
    child.stdin.close()
    try:
        child.wait(timeout=20)
    finally:
        child.kill()
        os.close(read_end)
    assert time.monotonic() - start < 15  # 1 + 2 s, not the 60 s it asked for
