"""The ptrace sandbox: run programs with another directory tree as their root."""
