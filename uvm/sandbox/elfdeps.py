"""What an ELF file will load: its PT_INTERP and DT_NEEDED names (pure).

Used to prefetch, in parallel, the libraries a program is about to open
(``materialize.py``), so that a cold start does not pay one round trip per
library.  Reads only the program headers, the dynamic section and the
string table; anything malformed gives an empty answer, never an error.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import BinaryIO, List, Optional, Tuple

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 1, 5, 15, 29


class ElfInfo:
    __slots__ = ("interp", "needed", "runpath", "is_64")

    def __init__(self, interp: Optional[str], needed: List[str], runpath: List[str],
                 is_64: bool) -> None:
        self.interp = interp
        self.needed = needed
        self.runpath = runpath
        self.is_64 = is_64


def read_elf(handle: BinaryIO) -> Optional[ElfInfo]:
    """PT_INTERP, DT_NEEDED and DT_RUNPATH/DT_RPATH of an open ELF file, or None."""
    try:
        return _read(handle)
    except (OSError, struct.error, ValueError, IndexError):
        return None


def _read(f: BinaryIO) -> Optional[ElfInfo]:
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[5] != 1:  # little-endian only
        return None
    is_64 = head[4] == 2
    if is_64:
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        ph_fmt = "<IIQQQQQQ"  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        dyn_fmt, dyn_size = "<qQ", 16
    else:
        phoff, = struct.unpack_from("<I", head, 28)
        phentsize, phnum = struct.unpack_from("<HH", head, 42)
        ph_fmt = "<IIIIIIII"  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        dyn_fmt, dyn_size = "<iI", 8
    if phnum > 256:
        return None
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    loads: List[Tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interp = None
    dynamic = None
    for i in range(phnum):
        row = struct.unpack_from(ph_fmt, table, i * phentsize)
        if is_64:
            ptype, offset, vaddr, filesz = row[0], row[2], row[3], row[5]
        else:
            ptype, offset, vaddr, filesz = row[0], row[1], row[2], row[4]
        if ptype == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif ptype == PT_INTERP and filesz < 4096:
            f.seek(offset)
            interp = f.read(filesz).rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif ptype == PT_DYNAMIC and filesz < (1 << 20):
            dynamic = (offset, filesz)
    needed: List[str] = []
    runpath: List[str] = []
    if dynamic is not None:
        f.seek(dynamic[0])
        data = f.read(dynamic[1])
        strtab = None
        needed_offsets: List[int] = []
        runpath_offsets: List[int] = []
        for pos in range(0, len(data) - dyn_size + 1, dyn_size):
            tag, value = struct.unpack_from(dyn_fmt, data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                needed_offsets.append(value)
            elif tag == DT_STRTAB:
                strtab = value
            elif tag in (DT_RUNPATH, DT_RPATH):
                runpath_offsets.append(value)
        if strtab is not None:
            base = None
            for vaddr, offset, filesz in loads:
                if vaddr <= strtab < vaddr + filesz:
                    base = strtab - vaddr + offset
                    break
            if base is not None:
                for off in needed_offsets:
                    needed.append(_string(f, base + off))
                for off in runpath_offsets:
                    runpath.extend(p for p in _string(f, base + off).split(":") if p)
    return ElfInfo(interp, [n for n in needed if n], runpath, is_64)


SHT_DYNSYM, SHN_UNDEF = 11, 0
SYMBOLS_MAX = 64 << 20  # bytes of symbol and string table read at most


def imports(f: BinaryIO, wanted: Tuple[bytes, ...]) -> Optional[Tuple[bool, bool]]:
    """(64-bit, takes one of the functions ``wanted`` from a library) for an
    ELF file, from its dynamic symbol table (the names of its undefined
    symbols), or None (not ELF, no section headers, malformed)."""
    try:
        return _imports(f, wanted)
    except (OSError, struct.error, ValueError, IndexError):
        return None


def _imports(f: BinaryIO, wanted: Tuple[bytes, ...]) -> Optional[Tuple[bool, bool]]:
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[5] != 1:
        return None
    is_64 = head[4] == 2
    if is_64:
        shoff, = struct.unpack_from("<Q", head, 40)
        shentsize, shnum = struct.unpack_from("<HH", head, 58)
        sh_fmt, sym_fmt = "<IIQQQQIIQQ", "<I2xH16x"   # name, shndx of an Elf64_Sym
    else:
        shoff, = struct.unpack_from("<I", head, 32)
        shentsize, shnum = struct.unpack_from("<HH", head, 46)
        sh_fmt, sym_fmt = "<IIIIIIIIII", "<I10xH"      # name, shndx of an Elf32_Sym
    if not shoff or not 0 < shnum <= 4096:
        return None
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    sections = [struct.unpack_from(sh_fmt, table, i * shentsize) for i in range(shnum)]
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != SHT_DYNSYM or size > SYMBOLS_MAX or link >= shnum:
            continue
        str_offset, str_size = sections[link][4], sections[link][5]
        if str_size > SYMBOLS_MAX or entsize != struct.calcsize(sym_fmt):
            return None
        f.seek(str_offset)
        strings = f.read(str_size)
        f.seek(offset)
        symbols = f.read(size - size % entsize)
        names = frozenset(wanted)
        find = strings.find
        return is_64, any(shndx == SHN_UNDEF and strings[name:find(b"\0", name)] in names
                          for name, shndx in struct.iter_unpack(sym_fmt, symbols) if name)
    return is_64, False


def _string(f: BinaryIO, offset: int) -> str:
    f.seek(offset)
    raw = f.read(256)
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


LIB_DIRS_64 = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
               "/lib", "/usr/lib", "/usr/local/lib")
LIB_DIRS_32 = ("/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/lib32", "/usr/lib32",
               "/lib", "/usr/lib")

__all__ = ["ElfInfo", "read_elf", "imports", "LIB_DIRS_64", "LIB_DIRS_32"]
