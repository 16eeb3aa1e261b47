# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The field names of Cloud Hypervisor's VmConfig, to check ch_vm's ``extra_config`` before
anything on the host changes.

CH refuses unknown fields anywhere in a VmConfig (serde's ``deny_unknown_fields``), but only when
the config reaches it: for a new VM after its VMM was launched, and for a running VM only at its
next restart (the change would sit in the record until then). Checking the names here turns that
into an error naming the option, before the lock, the record or the VMM are touched. Values are
left to CH.

The table is the union of the OpenAPI specs of CH v53.0 and of its main branch (2026-08):
``<Schema>: field field:<Schema> field:[<Schema>] ...`` where ``:<Schema>`` marks an object and
``:[<Schema>]`` a list of objects whose fields are checked too. tests/unit/test_vmconfig.py
compares it with the specs in shared/ch-api/.
No Ansible imports here.
"""


from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError

TABLE = '''
VmConfig: balloon:BalloonConfig console:ConsoleConfig cpus:CpusConfig
    debug_console:DebugConsoleConfig devices:[DeviceConfig] disks:[DiskConfig] fs:[FsConfig]
    generic-vhost-user:[GenericVhostUserConfig] generic_vhost_user:[GenericVhostUserConfig] iommu
    landlock_enable landlock_rules:[LandlockConfig] memory:MemoryConfig net:[NetConfig]
    numa:[NumaConfig] payload:PayloadConfig pci_segments:[PciSegmentConfig] platform:PlatformConfig
    pmem:[PmemConfig] pvpanic rate_limit_groups:[RateLimitGroupConfig] rng:RngConfig rtc:RtcConfig
    serial:SerialConfig tpm:TpmConfig user_devices:[UserDeviceConfig] vdpa:[VdpaConfig]
    vsock:VsockConfig watchdog
CpusConfig: affinity:[CpuAffinity] boot_vcpus core_scheduling features:CpuFeatures kvm_hyperv
    max_phys_bits max_vcpus nested topology:CpuTopology
CpuTopology: cores_per_die dies_per_package packages threads_per_core
CpuAffinity: host_cpus vcpu
CpuFeatures: amx
MemoryConfig: hotplug_method hotplug_size hotplugged_size hugepage_size hugepages mergeable prefault
    reserve shared size thp zones:[MemoryZoneConfig]
MemoryZoneConfig: file host_numa_node hotplug_size hotplugged_size hugepage_size hugepages id
    mergeable prefault reserve shared size
PayloadConfig: cmdline firmware host_data igvm initramfs kernel
RateLimitGroupConfig: id rate_limiter_config:RateLimiterConfig
RateLimiterConfig: bandwidth:TokenBucket ops:TokenBucket
TokenBucket: one_time_burst refill_time size
DiskConfig: backing_files direct id image_type iommu lock_granularity num_queues path pci_device_id
    pci_segment queue_affinity:[VirtQueueAffinity] queue_size rate_limit_group
    rate_limiter_config:RateLimiterConfig readonly serial sparse vhost_socket vhost_user
VirtQueueAffinity: host_cpus queue_index
NetConfig: host_mac id iommu ip mac mask mtu num_queues offload_csum offload_tso offload_ufo
    pci_device_id pci_segment queue_size rate_limiter_config:RateLimiterConfig tap vhost_mode
    vhost_socket vhost_user
RngConfig: id iommu pci_device_id pci_segment src
BalloonConfig: deflate_on_oom free_page_reporting id iommu pci_device_id pci_segment size
FsConfig: id num_queues pci_device_id pci_segment queue_size socket tag
GenericVhostUserConfig: device_type pci_device_id pci_segment queue_sizes socket
PmemConfig: discard_writes file id iommu pci_device_id pci_segment size
SerialConfig: file mode socket
ConsoleConfig: file id iommu mode pci_device_id pci_segment socket
DebugConsoleConfig: file iobase mode
DeviceConfig: id iommu path pci_device_id pci_segment x_exclude_mmap_bars x_nv_gpudirect_clique
UserDeviceConfig: id pci_device_id pci_segment socket
VdpaConfig: id iommu num_queues path pci_device_id pci_segment
VsockConfig: cid id iommu pci_device_id pci_segment socket
NumaConfig: cpus device_id distances:[NumaDistance] guest_numa_id memory_zones pci_segments
NumaDistance: destination distance
RtcConfig: id iommu pci_device_id pci_segment
PciSegmentConfig: mmio32_aperture_weight mmio64_aperture_weight pci_segment
PlatformConfig: chassis_asset_tag iommu_address_width_bits iommu_segments iommufd num_pci_segments
    oem_strings serial_number sev_snp system_family system_manufacturer system_product_name
    system_serial_number system_sku_number system_uuid system_version tdx uuid vfio_p2p_dma
TpmConfig: socket
LandlockConfig: access path
'''


def _parse(table):
    schemas = {}
    name = None
    for line in table.strip().splitlines():
        if not line.startswith(' '):
            name, line = line.split(':', 1)
            schemas[name] = {}
        for word in line.split():
            field, _sep, ref = word.partition(':')
            schemas[name][field] = ref or None
    return schemas


SCHEMAS = _parse(TABLE)


def check_extra_config(extra, option='extra_config'):
    """Raise OptionError naming the first field of ``extra`` that VmConfig does not have."""
    _check(extra, 'VmConfig', option)


def _check(value, schema, path):
    fields = SCHEMAS[schema]
    for key in sorted(value, key=str):
        if key not in fields:
            raise OptionError(path, "unknown field %r: Cloud Hypervisor's %s has no such field (it has: %s)"
                              % (key, schema, ', '.join(sorted(fields))))
        ref = fields[key]
        item = value[key]
        if ref is None:
            continue
        if ref.startswith('[') and isinstance(item, list):
            for index, element in enumerate(item):
                if isinstance(element, dict):
                    _check(element, ref[1:-1], '%s.%s[%d]' % (path, key, index))
        elif not ref.startswith('[') and isinstance(item, dict):
            _check(item, ref, '%s.%s' % (path, key))
