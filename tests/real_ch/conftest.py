"""Fixtures for the real_ch suite; the environment it needs is described in realch.py and README.md."""
import os

import pytest

from tests.real_ch.realch import SKIP_REASON, RealHost, host_problems, real_ch_requested


@pytest.fixture(scope='module')
def real_host(request, tmp_path_factory):
    binary = os.environ.get('CH_BINARY')
    if not binary:
        pytest.skip(SKIP_REASON)
    firmware = os.environ.get('CH_FIRMWARE')
    image = os.environ.get('CH_IMAGE')
    problems = host_problems(binary, firmware, image)
    if problems:
        message = 'real_ch: this host cannot run the real_ch suite: ' + '; '.join(problems)
        if real_ch_requested(request.config):
            pytest.fail(message)
        pytest.skip(message)
    host = RealHost(tmp_path_factory.mktemp('real-ch'), binary, firmware, image)
    yield host
    try:
        for task in host.teardown_tasks():  # one play each: one failing task never hides the rest
            host.play([task])
    finally:
        host.last_resort_cleanup()


@pytest.fixture(scope='module')
def guest(real_host):
    """The suite's VM, booted from the cloud image with cloud-init, on a fresh test bridge."""
    host = real_host
    host.ok('cloudhv.ch.ch_network', {'name': host.bridge, 'addresses': [host.gateway]})
    first = host.ok('cloudhv.ch.ch_vm', host.vm_args())
    vm = first['vm']
    seen, serial = host.wait_for_boot(vm['serial_file'], vm['pid'])
    return {'first': first, 'seen': seen, 'serial': serial}
