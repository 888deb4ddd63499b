"""The rootless publisher: keys, chunking, object store, catalog writer, publish driver."""

from uvm.cvmfs.publish.chunking import NO_CHUNKING, ChunkPolicy
from uvm.cvmfs.publish.keys import KeyPaths, create_keys
from uvm.cvmfs.publish.publisher import PublishResult, publish

__all__ = ["ChunkPolicy", "KeyPaths", "NO_CHUNKING", "PublishResult", "create_keys", "publish"]
