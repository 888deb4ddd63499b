"""Fixtures for the CernVM-FS tests: keys and a loopback HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from dataclasses import dataclass

import pytest
from cvmfs_testlib import FQRN

from uvm.cvmfs.publish import create_keys


@pytest.fixture(scope="session")
def keydir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("keys"))
    create_keys(FQRN, path)
    return path


@pytest.fixture(scope="session")
def other_keydir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("otherkeys"))
    create_keys(FQRN, path)
    return path


# --- loopback HTTP -----------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@dataclass
class Server:
    docroot: str
    url: str

    def repo_url(self, fqrn: str = FQRN) -> str:
        return f"{self.url}/cvmfs/{fqrn}"

    def store(self, fqrn: str = FQRN) -> str:
        return os.path.join(self.docroot, "cvmfs", fqrn)


@pytest.fixture
def http_server(tmp_path):
    """A real ``http.server`` on 127.0.0.1 serving ``docroot``; stores go in docroot/cvmfs/FQRN."""
    docroot = tmp_path / "www"
    (docroot / "cvmfs").mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(docroot))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(str(docroot), f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


