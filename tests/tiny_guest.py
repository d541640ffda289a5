"""A minimal 64-bit ELF "kernel" that the real Firecracker boots on this machine.

Firecracker loads an ELF kernel's PT_LOAD segments at their physical addresses and
enters it in 64-bit long mode with interrupts off, identity paging and the boot
parameters in RSI (the Linux x86-64 boot protocol). This guest needs none of that: it
writes one byte to the first serial port (0x3f8, which Firecracker copies to its own
standard output), then halts forever. With interrupts off nothing wakes it, so it costs
no CPU while it "runs", and Firecracker can pause, snapshot and resume it.

Two variants help measure what the VMM does when its guest reboots:

- `reboot="now"`: right after the byte, pulse the CPU reset line through the i8042
  keyboard controller (command 0xFE to port 0x64), as Linux does with `reboot=k`;
- `reboot="ctrl-alt-del"`: after the byte, poll the i8042 status port until a key
  byte is waiting (Firecracker's `SendCtrlAltDel` puts the key sequence there), then
  reset as above: the init of docs/backends/firecracker-guest.md in a dozen bytes. It spins
  (every poll is a VM exit) until Ctrl-Alt-Del comes, so use it only briefly.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

LOAD_ADDRESS = 0x100_0000  # 16 MiB: above Firecracker's HIMEM_START (1 MiB), inside 128 MiB
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56

SERIAL_BYTE = b"X"

Reboot = Literal["never", "now", "ctrl-alt-del"]


def _code(byte: bytes, reboot: Reboot) -> bytes:
    out_byte = (
        b"\x66\xba\xf8\x03"  # mov dx, 0x3f8   (COM1 transmit register)
        + b"\xb0"
        + byte  # mov al, <byte>
        + b"\xee"  # out dx, al
    )
    reset = b"\xb0\xfe\xe6\x64"  # mov al, 0xfe; out 0x64, al   (i8042: pulse CPU reset)
    wait_for_key = (
        b"\xe4\x64"  # poll: in al, 0x64   (i8042 status)
        b"\xa8\x01"  #       test al, 1    (output buffer full: a key byte waits)
        b"\x74\xfa"  #       jz poll
    )
    halt_forever = b"\xf4\xeb\xfd"  # halt: hlt; jmp halt
    if reboot == "now":
        return out_byte + reset + halt_forever
    if reboot == "ctrl-alt-del":
        return out_byte + wait_for_key + reset + halt_forever
    return out_byte + halt_forever


def tiny_guest_image(byte: bytes = SERIAL_BYTE, reboot: Reboot = "never") -> bytes:
    """The ELF file's bytes: an ELF header, one PT_LOAD program header, the code."""
    if len(byte) != 1:
        raise ValueError("the guest writes exactly one byte")
    code_offset = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    code = _code(byte, reboot)
    size = code_offset + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1
    elf_header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # e_type: ET_EXEC
        0x3E,  # e_machine: x86-64
        1,  # e_version
        LOAD_ADDRESS + code_offset,  # e_entry
        ELF_HEADER_SIZE,  # e_phoff
        0,  # e_shoff: no section headers
        0,  # e_flags
        ELF_HEADER_SIZE,  # e_ehsize
        PROGRAM_HEADER_SIZE,  # e_phentsize
        1,  # e_phnum
        0,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )
    program_header = struct.pack(
        "<IIQQQQQQ",
        1,  # p_type: PT_LOAD
        5,  # p_flags: read + execute
        0,  # p_offset: the whole file, headers included
        LOAD_ADDRESS,  # p_vaddr
        LOAD_ADDRESS,  # p_paddr: where Firecracker puts it
        size,  # p_filesz
        size,  # p_memsz
        0x1000,  # p_align
    )
    assert len(elf_header) == ELF_HEADER_SIZE
    assert len(program_header) == PROGRAM_HEADER_SIZE
    return elf_header + program_header + code


def write_tiny_guest(path: Path, byte: bytes = SERIAL_BYTE, reboot: Reboot = "never") -> Path:
    """Write the tiny guest kernel to `path` and return `path`."""
    path.write_bytes(tiny_guest_image(byte, reboot))
    return path
