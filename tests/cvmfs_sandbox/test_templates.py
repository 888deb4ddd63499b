"""Template specifications and run records (pure)."""

from __future__ import annotations

import pytest

from uvm.config import Template
from uvm.errors import UsageError
from uvm.record import RunRecord, TreeRecord
from uvm.templates import parse_spec

REGISTRY = {"slc4": Template("slc4", "cernvm-slc4.cern.ch", "/os/slc4", ("/home",), {"LANG": "C"})}


@pytest.mark.parametrize("text, repo, path, tag, date", [
    ("slc4", "cernvm-slc4.cern.ch", "/os/slc4", None, None),
    ("slc4@prod", "cernvm-slc4.cern.ch", "/os/slc4", "prod", None),
    ("slc4@2026-11-01T00:00:00Z", "cernvm-slc4.cern.ch", "/os/slc4", None, "2026-11-01T00:00:00Z"),
    ("slc4@2026-11-01", "cernvm-slc4.cern.ch", "/os/slc4", None, "2026-11-01"),
    ("sft.cern.ch:/os/el9", "sft.cern.ch", "/os/el9", None, None),
    ("sft.cern.ch:/os/el9/@v2", "sft.cern.ch", "/os/el9", "v2", None),
    ("sft.cern.ch:", "sft.cern.ch", "/", None, None),
    ("sft.cern.ch:/a//b/./c@2024-05-01T12:00:00+02:00", "sft.cern.ch", "/a/b/c", None,
     "2024-05-01T12:00:00+02:00"),
])
def test_parse(text, repo, path, tag, date):
    spec = parse_spec(text, REGISTRY)
    assert (spec.repository, spec.path, spec.tag, spec.date) == (repo, path, tag, date)


def test_registry_defaults():
    spec = parse_spec("slc4@v1", REGISTRY)
    assert spec.name == "slc4" and spec.binds == ("/home",) and dict(spec.env) == {"LANG": "C"}
    assert spec.selector == "@v1"
    assert parse_spec("x.org:/p").binds == ()


@pytest.mark.parametrize("text, needle", [
    ("", "empty"), ("nope", "unknown template 'nope'"), ("slc4@", "nothing after"),
    ("not a repo:/x", "not a repository name"), ("sft.cern.ch:/a/../b", "'..'"),
])
def test_parse_errors(text, needle):
    with pytest.raises(UsageError) as info:
        parse_spec(text, REGISTRY)
    assert needle in str(info.value)


def test_record_round_trip():
    record = RunRecord(["python3", "-c", "pass"], "/work",
                       TreeRecord("a.b", "0" * 40, 3, "/os", "a.b:/os@v1"),
                       [TreeRecord("c.d", "1" * 40, 9)], ["/data"], ["K=V"], 0,
                       "2026-11-26T00:00:00Z", 1.5, "0.1")
    again = RunRecord.from_json(record.to_json())
    assert again == record


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "other"}', '{"format": "uvm-run-record/1"}'])
def test_record_rejects(text):
    with pytest.raises(UsageError):
        RunRecord.from_json(text)
