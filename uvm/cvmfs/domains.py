"""Built-in knowledge of the public CernVM-FS domains: stratum-1 mirrors and master keys.

Why: on a grid worker node ``uvm run --cvmfs sft.cern.ch`` must work with no
configuration at all, as the stock client does with its ``domain.d`` files.
The lists are those of the CernVM-FS default configuration (2.12 era); the
keys ship as package data under ``uvm/data/keys/<domain>/``.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any, List, Mapping, Optional, Tuple

_KEYS_ROOT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "keys")

DOMAIN_SERVERS: Mapping[str, str] = MappingProxyType({
    "cern.ch": (
        "http://cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@;"
        "http://cernvmfs.gridpp.rl.ac.uk/cvmfs/@fqrn@;"
        "http://cvmfs-s1bnl.opensciencegrid.org/cvmfs/@fqrn@;"
        "http://cvmfs-s1fnal.opensciencegrid.org/cvmfs/@fqrn@"
    ),
    "egi.eu": (
        "http://cvmfs-egi.gridpp.rl.ac.uk:8000/cvmfs/@fqrn@;"
        "http://klei.nikhef.nl:8000/cvmfs/@fqrn@;"
        "http://cvmfsrepo.lcg.triumf.ca:8000/cvmfs/@fqrn@;"
        "http://cvmfs-stratum-one.ihep.ac.cn:8000/cvmfs/@fqrn@"
    ),
    "opensciencegrid.org": (
        "http://cvmfs-egi.gridpp.rl.ac.uk:8000/cvmfs/@fqrn@;"
        "http://klei.nikhef.nl:8000/cvmfs/@fqrn@;"
        "http://cvmfs-s1bnl.opensciencegrid.org:8000/cvmfs/@fqrn@;"
        "http://cvmfs-s1fnal.opensciencegrid.org:8000/cvmfs/@fqrn@;"
        "http://cvmfs-stratum-one.ihep.ac.cn:8000/cvmfs/@fqrn@"
    ),
})


def domain_of(fqrn: str) -> Optional[str]:
    """The built-in domain ``fqrn`` belongs to (``sft.cern.ch`` → ``cern.ch``), if any."""
    for domain in sorted(DOMAIN_SERVERS, key=len, reverse=True):
        if fqrn.endswith("." + domain):
            return domain
    return None


def keys_dir(domain: str) -> str:
    """Directory of the shipped master public keys of ``domain``."""
    return os.path.join(_KEYS_ROOT, domain)


def builtin_settings(fqrn: str) -> Tuple[Optional[str], Mapping[str, Any]]:
    """Settings layer for ``fqrn`` from the built-in domain data (empty if unknown)."""
    domain = domain_of(fqrn)
    if domain is None:
        return None, MappingProxyType({})
    return domain, MappingProxyType({
        "server_url": DOMAIN_SERVERS[domain],
        "keys_dir": keys_dir(domain),
    })


SYSTEM_KEYS_DIR = "/etc/cvmfs/keys"


def public_key_files(public_key: str, keys_directory: str, fqrn: Optional[str] = None) -> List[str]:
    """Master public key files in the stock client's order of preference.

    ``CVMFS_PUBLIC_KEY`` (``:``-separated files) beats ``CVMFS_KEYS_DIR``
    (every ``*.pub`` in it), as in the stock code; with neither, the shipped
    keys of ``fqrn``'s domain are used, and for other repositories the
    system's ``/etc/cvmfs/keys``.  Any one key that verifies is enough.
    """
    if public_key:
        return [p for p in public_key.split(":") if p]
    directory = keys_directory
    if not directory and fqrn:
        domain = domain_of(fqrn)
        directory = keys_dir(domain) if domain else ""
    directory = directory or SYSTEM_KEYS_DIR
    import glob  # (here: the configuration imports this module on every template run)

    return sorted(glob.glob(os.path.join(directory, "*.pub")))
