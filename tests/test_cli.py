import subprocess
import sys


def uvm(*args):
    return subprocess.run(
        [sys.executable, "-m", "uvm", *args], capture_output=True, text=True
    )


def test_version_names_the_program():
    result = uvm("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("uvm ")


def test_unknown_command_is_a_usage_error_without_traceback():
    result = uvm("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_doctor_reports_the_interpreter():
    result = uvm("doctor")
    assert "python:" in result.stdout
