"""The real_ch test guest: a tiny 32-bit PVH kernel that Cloud Hypervisor boots with `kernel`.

This machine's KVM (kvm_pvm) runs 32-bit protected-mode guest code but triple-faults a guest's
own switch to long mode, so no stock kernel boots here. This guest never leaves 32-bit mode. Its
source is tests/support/testguest.S (CODE below is that file assembled; tests/unit/test_testguest.py
re-assembles it and compares). What it does, read from its serial port (COM1):

    CLOUDHV-TEST-GUEST up          once, at boot
    tick 00000000                  then about every 0.3 s, the counter kept in guest memory
    tick 00000001 ...

It ignores ACPI (interrupts stay off), so a graceful stop must escalate. With `poweroff` on its
kernel command line it powers the VM off after its third tick, through CH's ACPI shutdown port.

The file is an ELF64 (linux-loader reads only ELF64 headers, as for a vmlinux) holding one PT_LOAD
segment (the whole file, at guest physical 1 MiB: CH refuses entry points below it) and one PT_NOTE
with the Xen PVH entry note, which makes CH enter in 32-bit mode at _start.

    python tests/support/testguest.py /path/to/guest.elf    writes it
"""
import re
import struct
import sys

MARKER = 'CLOUDHV-TEST-GUEST up'
TICK = re.compile(r'^tick ([0-9a-f]{8})$', re.M)

LOAD_ADDRESS = 0x100000     # guest physical address of file offset 0
CODE_OFFSET = 0x100         # _start's file offset (the .S is linked at LOAD_ADDRESS + CODE_OFFSET)
XEN_ELFNOTE_PHYS32_ENTRY = 18

# testguest.S assembled (GNU as --32, ld -Ttext=0x100100 --oformat binary)
CODE = bytes.fromhex(
    'bc00f0090031ff8b731885f67411813e706f77657408803e00740446ebf047beb0011000e866000000bec701'
    '1000e85c000000a19c011000b908000000c1c00489c383e30f508a83a001100066baf803ee58e2e9b00aeeff'
    '059c01100085ff7410833d9c01100003720766ba0006b034ee0f31050000003083d20089c689d5f3900f3139'
    'ea72f877a039f072f2eb9a66baf803ac84c07403eeebf8c30000000030313233343536373839616263646566'
    '434c4f554448562d544553542d47554553542075700a007469636b2000')

_EHDR = struct.Struct('<4sBBBBB7sHHIQQQIHHHHHH')   # Elf64_Ehdr, 64 bytes
_PHDR = struct.Struct('<IIQQQQQQ')                 # Elf64_Phdr, 56 bytes
_NHDR = struct.Struct('<III')                      # Elf64_Nhdr (three 32-bit words)
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4


def image():
    """The guest's ELF file as bytes."""
    entry = LOAD_ADDRESS + CODE_OFFSET
    note = _NHDR.pack(4, 4, XEN_ELFNOTE_PHYS32_ENTRY) + b'Xen\0' + struct.pack('<I', entry)
    phoff = _EHDR.size
    note_offset = phoff + 2 * _PHDR.size
    assert note_offset + len(note) <= CODE_OFFSET
    size = CODE_OFFSET + len(CODE)
    ehdr = _EHDR.pack(b'\x7fELF', 2, 1, 1, 0, 0, b'\0' * 7,   # ELFCLASS64, little endian, v1
                      2, 62, 1,                               # ET_EXEC, EM_X86_64, EV_CURRENT
                      entry, phoff, 0, 0, _EHDR.size, _PHDR.size, 2, 0, 0, 0)
    load = _PHDR.pack(PT_LOAD, PF_R | PF_W | PF_X, 0, LOAD_ADDRESS, LOAD_ADDRESS, size, size, 0x1000)
    pnote = _PHDR.pack(PT_NOTE, PF_R, note_offset, 0, 0, len(note), len(note), 4)
    head = ehdr + load + pnote + note
    return head + b'\0' * (CODE_OFFSET - len(head)) + CODE


def write(path):
    with open(path, 'wb') as handle:
        handle.write(image())
    return path


def ticks(text):
    """The counter values the guest printed, in order."""
    return [int(value, 16) for value in TICK.findall(text)]


if __name__ == '__main__':
    write(sys.argv[1])
