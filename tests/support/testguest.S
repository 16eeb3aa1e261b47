# The real_ch test guest: a 32-bit PVH guest for Cloud Hypervisor (tests/support/testguest.py wraps
# these bytes in an ELF64 file with a XEN_ELFNOTE_PHYS32_ENTRY note; CH passes it as `kernel`).
# CH enters at _start in 32-bit protected mode, paging off, %ebx = the hvm_start_info. The guest
# never enters long mode (this machine's kvm_pvm triple-faults a guest's own switch to it).
# It writes a marker line to COM1 (0x3f8), then "tick <counter as 8 hex digits>" about every 2^29.6
# TSC cycles (~0.3 s at 2.6 GHz), keeping the counter in guest memory, so a restored snapshot goes
# on from the snapshot's value. Interrupts stay off: it ignores ACPI power-button events. With
# "poweroff" anywhere on its kernel command line, it powers the VM off itself after its third tick
# (CH's ACPI sleep control port 0x600, S5 | SLP_EN).
# Assemble: as --32 -o g.o testguest.S && ld -m elf_i386 -Ttext=0x100100 --oformat binary -o g.bin g.o
# (tests/unit/test_testguest.py checks that this gives testguest.CODE byte for byte).
        .code32
        .globl _start
_start:
        mov     $0x9f000, %esp          # a stack in low RAM
        xor     %edi, %edi              # edi = poweroff flag
        mov     24(%ebx), %esi          # hvm_start_info.cmdline_paddr (low 32 bits)
        test    %esi, %esi
        jz      2f
1:      cmpl    $0x65776f70, (%esi)     # "powe"
        je      3f
        cmpb    $0, (%esi)
        je      2f
        inc     %esi
        jmp     1b
3:      inc     %edi
2:      mov     $marker, %esi
        call    puts
tick:   mov     $ticklbl, %esi
        call    puts
        mov     counter, %eax
        mov     $8, %ecx
4:      rol     $4, %eax
        mov     %eax, %ebx
        and     $15, %ebx
        push    %eax
        mov     hexdigits(%ebx), %al
        mov     $0x3f8, %dx
        out     %al, %dx
        pop     %eax
        loop    4b
        mov     $10, %al
        out     %al, %dx
        incl    counter
        test    %edi, %edi
        jz      5f
        cmpl    $3, counter
        jb      5f
        mov     $0x600, %dx             # CH's ACPI sleep control: S5 | SLP_EN
        mov     $0x34, %al
        out     %al, %dx
5:      rdtsc                           # wait DELAY TSC cycles
        add     $0x30000000, %eax
        adc     $0, %edx
        mov     %eax, %esi
        mov     %edx, %ebp
6:      pause
        rdtsc
        cmp     %ebp, %edx
        jb      6b
        ja      tick
        cmp     %esi, %eax
        jb      6b
        jmp     tick
puts:   mov     $0x3f8, %dx
7:      lodsb
        test    %al, %al
        jz      8f
        out     %al, %dx
        jmp     7b
8:      ret
        .p2align 2
counter:  .long 0
hexdigits: .ascii "0123456789abcdef"
marker:   .asciz "CLOUDHV-TEST-GUEST up\n"
ticklbl:  .asciz "tick "
