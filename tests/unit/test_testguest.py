"""The real_ch test guest (tests/support/testguest.py): its bytes are its committed source
assembled, and its ELF file is what Cloud Hypervisor's loader (linux-loader's Elf::load) accepts
as a PVH kernel: ELF64 headers, a PT_LOAD at or above 1 MiB, a Xen PHYS32_ENTRY note."""
import os
import struct
import subprocess

from tests.support import testguest

SOURCE = os.path.join(os.path.dirname(testguest.__file__), 'testguest.S')


def test_code_is_the_committed_source_assembled(tmp_path):
    obj, binary = str(tmp_path / 'g.o'), str(tmp_path / 'g.bin')
    subprocess.run(['as', '--32', '-o', obj, SOURCE], check=True)
    subprocess.run(['ld', '-m', 'elf_i386', '-Ttext=0x%x' % (testguest.LOAD_ADDRESS + testguest.CODE_OFFSET),
                    '--oformat', 'binary', '-o', binary, obj], check=True)
    with open(binary, 'rb') as handle:
        assert handle.read() == testguest.CODE


def _loader_view(data):
    """What linux-loader reads: (entry, [(paddr, bytes) of each PT_LOAD], PVH entry or None)."""
    ident = data[:16]
    assert ident[:4] == b'\x7fELF' and ident[5] == 1          # magic, little endian
    (entry, phoff) = struct.unpack_from('<QQ', data, 24)
    (phentsize, phnum) = struct.unpack_from('<HH', data, 54)
    assert phentsize == 56 and phoff >= 64                    # Elf64_Phdr, after the Elf64_Ehdr
    loads, pvh = [], None
    for index in range(phnum):
        p_type, _flags, offset, _vaddr, paddr, filesz, memsz, _align = struct.unpack_from(
            '<IIQQQQQQ', data, phoff + index * 56)
        if p_type == 1 and filesz:
            assert memsz >= filesz
            loads.append((paddr, data[offset:offset + filesz]))
        elif p_type == 4:
            namesz, descsz, n_type = struct.unpack_from('<III', data, offset)
            if n_type == 18 and data[offset + 12:offset + 12 + namesz] == b'Xen\0':
                pvh = struct.unpack_from('<I', data, offset + 12 + ((namesz + 3) & ~3))[0]
                assert descsz >= 4
    return entry, loads, pvh


def test_elf_is_a_pvh_kernel_cloud_hypervisor_loads():
    entry, loads, pvh = _loader_view(testguest.image())
    assert entry >= 0x100000                                  # CH: entry at or above HIGH_RAM_START
    assert pvh == testguest.LOAD_ADDRESS + testguest.CODE_OFFSET
    (paddr, segment), = loads
    start = pvh - paddr
    assert segment[start:start + len(testguest.CODE)] == testguest.CODE
    # the marker and tick label the tests read are in the loaded image
    assert testguest.MARKER.encode() + b'\n\0' in segment
    assert b'tick \0' in segment


def test_ticks_parses_the_counter_lines():
    text = 'CLOUDHV-TEST-GUEST up\ntick 00000000\ntick 00000001\ntick 0000001a\ntick 00'
    assert testguest.ticks(text) == [0, 1, 26]
