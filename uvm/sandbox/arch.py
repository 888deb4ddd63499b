"""The two guest ABIs on an x86_64 host: how a system call's number and
arguments sit in the registers, and how seccomp names the architecture.

A 32-bit (i386) tracee seen by a 64-bit tracer uses the same
``user_regs_struct``; only the argument registers differ.  The code segment
selector tells the ABI of a stopped tracee without an extra ptrace call.
"""

from __future__ import annotations

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

ABI_X86_64 = 0
ABI_I386 = 1
ABI_NAMES = ("x86_64", "i386")

# user_regs_struct field names holding arguments 0..5.
ARG_REGS = (
    ("rdi", "rsi", "rdx", "r10", "r8", "r9"),
    ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp"),
)
WORD_SIZE = (8, 4)
# Bytes below the stack pointer that the ABI lets leaf code use (x86_64's
# red zone); scratch data written for a system call goes below it.
RED_ZONE = (128, 0)
CS_I386 = 0x23
CS_X86_64 = 0x33


def abi_of_cs(cs: int) -> int:
    """ABI of a stopped tracee from its code segment selector."""
    return ABI_I386 if cs == CS_I386 else ABI_X86_64
