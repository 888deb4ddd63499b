"""An interactive bash in a terminal under uvm: Ctrl-Z, jobs, fg and Ctrl-C
behave as usual (group-stops are parked with PTRACE_LISTEN, terminal
signals reach the guest unchanged)."""

from __future__ import annotations

import os
import pty
import select
import time

import pytest

from harness import guest_env

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("uvm_available")]


class Terminal:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        self.out = b""

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def expect(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; got:\n{self.out.decode(errors='replace')}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed waiting for {text!r}:\n{self.out.decode(errors='replace')}")
                self.out += chunk
        idx = self.out.index(text.encode()) + len(text)
        seen, self.out = self.out[:idx], self.out[idx:]
        return seen.decode(errors="replace")

    def close(self) -> int:
        _pid, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return status


def test_interactive_bash_job_control(uvm_runner, host_root):
    env = guest_env(PS1="PROMPT> ", TERM="dumb")
    argv = uvm_runner.command(host_root, ["bash", "--norc", "--noprofile", "-i"])
    term = Terminal(argv, env)
    try:
        term.expect("PROMPT> ")
        term.send("sh -c 'echo ready; exec sleep 100'\n")
        term.expect("ready\r\n")
        time.sleep(0.5)
        term.send("\x1a")                      # Ctrl-Z
        term.expect("Stopped")
        term.expect("PROMPT> ")
        term.send("jobs -l | grep -c Stopped\n")
        term.expect("1\r\n")
        term.expect("PROMPT> ")
        term.send("fg\n")
        term.expect("sleep 100")
        time.sleep(0.5)
        term.send("\x03")                      # Ctrl-C
        term.expect("PROMPT> ")
        term.send("echo status-$?\n")
        term.expect("status-130")
        term.expect("PROMPT> ")
        term.send("exit 7\n")
        status = term.close()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    finally:
        try:
            os.kill(term.pid, 9)
        except OSError:
            pass


def test_ctrl_z_and_fg_on_uvm_itself(uvm_runner, host_root):
    """uvm run started from an interactive (host) shell: Ctrl-Z stops the
    guest and uvm as one job; fg resumes both; Ctrl-C ends the guest and uvm
    reports the same signal."""
    import shlex

    env = guest_env(PS1="HOST> ", TERM="dumb")
    cmd = uvm_runner.command(host_root, ["sh", "-c", "echo started; sleep 100; echo not-reached"])
    term = Terminal(["/bin/bash", "--norc", "--noprofile", "-i"], env)
    try:
        term.expect("HOST> ")
        term.send(shlex.join(cmd) + "\n")
        term.expect("started")
        time.sleep(1.0)
        term.send("\x1a")
        term.expect("Stopped")
        term.expect("HOST> ")
        term.send("fg\n")
        time.sleep(1.0)
        term.send("\x03")
        term.expect("HOST> ")
        term.send("echo host-status-$?\n")
        term.expect("host-status-130")
        term.send("exit\n")
        term.close()
    finally:
        try:
            os.kill(term.pid, 9)
        except OSError:
            pass
