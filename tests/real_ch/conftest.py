"""Fixtures for the real_ch suite; the environment it needs is described in realch.py and README.md."""
import os

import pytest

from tests.real_ch.realch import SKIP_REASON, CloudImageHost, RealHost, host_problems, real_ch_requested


def _ready(request, *files):
    binary = os.environ.get('CH_BINARY')
    if not binary:
        pytest.skip(SKIP_REASON)
    problems = host_problems(binary, *files)
    if problems:
        message = 'real_ch: this host cannot run the real_ch suite: ' + '; '.join(problems)
        if real_ch_requested(request.config):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _tear_down(host):
    try:
        for task in host.teardown_tasks():  # one play each: one failing task never hides the rest
            host.play([task])
    finally:
        host.last_resort_cleanup()


@pytest.fixture(scope='module')
def real_host(request, tmp_path_factory):
    """A private state_dir/run_dir/bridge for one test file, torn down after it."""
    host = RealHost(tmp_path_factory.mktemp('real-ch'), _ready(request))
    yield host
    _tear_down(host)


@pytest.fixture(scope='module')
def cloud_host(request, tmp_path_factory):
    firmware = os.environ.get('CH_FIRMWARE')
    image = os.environ.get('CH_IMAGE')
    if not (firmware or image):
        pytest.skip('real_ch: CH_FIRMWARE and CH_IMAGE are not set (a firmware and an Ubuntu jammy cloud '
                    'image boot this file\'s VM; the rest of tests/real_ch boots the test guest)')
    binary = _ready(request, ('CH_FIRMWARE', firmware), ('CH_IMAGE', image))
    host = CloudImageHost(tmp_path_factory.mktemp('real-ch-cloud'), binary, firmware, image)
    yield host
    _tear_down(host)


@pytest.fixture(scope='module')
def guest(cloud_host):
    """test_cloud_image.py's VM, booted from the cloud image with cloud-init, on a fresh test bridge."""
    host = cloud_host
    host.ok('cloudhv.ch.ch_network', {'name': host.bridge, 'addresses': [host.gateway]})
    first = host.ok('cloudhv.ch.ch_vm', host.vm_args())
    vm = first['vm']
    seen, serial = host.wait_for_boot(vm['serial_file'], vm['pid'])
    return {'first': first, 'seen': seen, 'serial': serial}
