"""``uvm demo`` and ``uvm templates`` from the command line."""

from __future__ import annotations

from conftest import FQRN, TEMPLATE_PATH, env_for, run_uvm


def test_uvm_demo(uvm_runner, workdir):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C",
           "TMPDIR": str(workdir)}
    res = run_uvm(uvm_runner, env, "demo", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[5/5] (warm cache)" in res.stdout
    assert res.stdout.count('python 3') == 2 and '{"ok": true}' in res.stdout
    assert f"user id {uvm_runner.uid}" in res.stdout


def test_uvm_templates(uvm_runner, published, server, workdir):
    env = env_for(published, server.url_for(), workdir)
    config = workdir / "uvm.toml"
    config.write_text(f'[templates.demo]\nrepository = "{FQRN}"\npath = "{TEMPLATE_PATH}"\n'
                      'binds = ["/srv"]\nenv = { LANG = "C" }\n')
    config.chmod(0o644)
    res = run_uvm(uvm_runner, env, "--config", str(config), "templates")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"demo: {FQRN}:{TEMPLATE_PATH}"
    assert "binds: /srv" in res.stdout and "LANG=C" in res.stdout
    assert any(line.startswith("  revision 1 (newest): root catalog ") for line in lines)
    assert any(line.split()[:4] == ["tag", "v1", "revision", "1"] for line in lines)
    res = run_uvm(uvm_runner, env, "--config", str(config), "templates", "--local",
                  f"{FQRN}:/nowhere@v1")
    assert res.returncode == 0 and res.stdout.startswith(f"{FQRN}:/nowhere@v1: {FQRN}:/nowhere")
    res = run_uvm(uvm_runner, env, "--config", str(config), "run", "--template", "nope",
                  "--", "true")
    assert res.returncode == 2 and "unknown template 'nope' (known: demo)" in res.stderr
