# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/cloudinit.py: rendering, digests, and the cidata ISO."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import io
import os
import subprocess
import sys

import pycdlib
import pytest
import yaml

from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    CloudHVError,
    HostError,
    MissingDependency,
    OptionError,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _meta(result):
    return yaml.safe_load(result['files']['meta-data'])


# --- render --------------------------------------------------------------------------------

def test_defaults():
    result = cloudinit.render('web1')
    assert sorted(result['files']) == ['meta-data', 'user-data']
    assert result['files']['user-data'] == b'#cloud-config\n{}\n'
    assert _meta(result) == {'instance-id': 'iid-web1', 'local-hostname': 'web1'}
    assert result['instance_id'] == 'iid-web1'
    assert result['hostname'] == 'web1'
    assert len(result['digest']) == 64 and int(result['digest'], 16) >= 0


def test_underscore_becomes_dash_in_default_hostname_only():
    result = cloudinit.render('web_1')
    assert result['hostname'] == 'web-1'
    assert result['instance_id'] == 'iid-web_1'


def test_meta_data_user_keys_win_and_extra_keys_kept():
    result = cloudinit.render('web1', meta_data={'instance-id': 'custom', 'public-keys': ['k1']})
    meta = _meta(result)
    assert meta == {'instance-id': 'custom', 'local-hostname': 'web1', 'public-keys': ['k1']}
    assert result['instance_id'] == 'custom'
    result = cloudinit.render('web1', meta_data={'local-hostname': 'www'})
    assert result['hostname'] == 'www'
    assert _meta(result)['instance-id'] == 'iid-web1'


def test_dict_user_data_rendered_as_cloud_config_in_given_order():
    data = {'packages': ['nginx'], 'users': [{'name': 'ops', 'gecos': u'Zoë'}], 'a_first': 1}
    text = cloudinit.render('web1', user_data=data)['files']['user-data']
    assert text.startswith(b'#cloud-config\n')
    assert yaml.safe_load(text) == data
    # sort_keys=False: the user's order, not alphabetical.
    assert text.index(b'packages:') < text.index(b'users:') < text.index(b'a_first:')
    # block style, readable UTF-8 rather than escapes
    assert b'{' not in text and u'Zoë'.encode('utf-8') in text


def test_long_strings_are_not_folded():
    key = 'ssh-ed25519 ' + 'A' * 300 + ' me@host'
    text = cloudinit.render('web1', user_data={'ssh_authorized_keys': [key]})['files']['user-data']
    assert ('- ' + key + '\n').encode() in text


@pytest.mark.parametrize('user_data', [
    '#cloud-config\nruncmd:\n  - [touch, /x]\n',
    '#!/bin/sh\necho hello\n',
    '#cloud-config-archive\n- type: text/cloud-config\n  content: "a: 1"\n',
    'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX--\n',
    '## template: jinja\n#cloud-config\nfqdn: {{ v1.local_hostname }}\n',
    '#cloud-config\r\npackages: [a]\r\n',
    '#cloud-config\n',
])
def test_string_user_data_verbatim(user_data):
    assert cloudinit.render('web1', user_data=user_data)['files']['user-data'] == \
        user_data.encode('utf-8')


def test_empty_forms_of_user_data_are_equivalent():
    results = [cloudinit.render('web1', user_data=value) for value in (None, '', {})]
    assert len(set(r['digest'] for r in results)) == 1
    assert all(r['files']['user-data'] == cloudinit.EMPTY_USER_DATA for r in results)


def test_network_config_only_when_given():
    assert 'network-config' not in cloudinit.render('web1', network_config=None)['files']
    assert 'network-config' not in cloudinit.render('web1', network_config='')['files']
    net = {'version': 2, 'ethernets': {'eth0': {'dhcp4': True}}}
    files = cloudinit.render('web1', network_config=net)['files']
    assert yaml.safe_load(files['network-config']) == net
    text = 'version: 1\nconfig:\n  - type: physical\n    name: eth0\n'
    files = cloudinit.render('web1', network_config=text)['files']
    assert files['network-config'] == text.encode()


# --- digest -------------------------------------------------------------------------------

def test_digest_deterministic_and_order_independent():
    a = cloudinit.render('web1', {'b': 1, 'a': 2}, {'x': 'y'}, {'version': 2})
    b = cloudinit.render('web1', {'b': 1, 'a': 2}, {'x': 'y'}, {'version': 2})
    assert a == b
    shuffled = dict(reversed(list(a['files'].items())))
    assert cloudinit.digest_files(shuffled) == a['digest']


def test_digest_is_stable_across_processes():
    """Same inputs, a fresh interpreter with a different hash seed: same digest. The pinned
    value guards the canonical form: changing it rebuilds every user's image, so it must come
    with a DIGEST_VERSION bump and a new value here."""
    code = ("from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit as c;"
            "print(c.render('web1', {'packages': ['nginx']}, {'x': 1}, 'version: 2\\n')['digest'])")
    env = dict(os.environ, PYTHONHASHSEED='12345',
               PYTHONPATH=os.path.join(REPO, 'build', 'collections'))
    out = subprocess.check_output([sys.executable, '-c', code], env=env).decode().strip()
    here = cloudinit.render('web1', {'packages': ['nginx']}, {'x': 1}, 'version: 2\n')['digest']
    assert out == here
    # sha256(b'cloudhv.ch cidata v1\n' b'9:meta-data1:m9:user-data1:u')
    assert cloudinit.digest_files({'user-data': b'u', 'meta-data': b'm'}) == \
        '9f0e6062d3f2380b4a7ca94cbb9028b0bfabb182b75db3991428e73cf54cf340'


def test_digest_changes_when_any_file_changes():
    base = cloudinit.render('web1', 'x', {'a': 1}, 'version: 2\n')['digest']
    variants = [
        cloudinit.render('web1', 'y', {'a': 1}, 'version: 2\n'),
        cloudinit.render('web1', 'x', {'a': 2}, 'version: 2\n'),
        cloudinit.render('web1', 'x', {'a': 1}, 'version: 1\n'),
        cloudinit.render('web1', 'x', {'a': 1}),
        cloudinit.render('web2', 'x', {'a': 1}, 'version: 2\n'),
    ]
    digests = [v['digest'] for v in variants]
    assert base not in digests
    assert len(set(digests)) == len(digests)


def test_digest_canonical_form_is_unambiguous():
    assert cloudinit.digest_files({'a': b'bc'}) != cloudinit.digest_files({'ab': b'c'})
    assert cloudinit.digest_files({'a': b'', 'b': b'x'}) != \
        cloudinit.digest_files({'a': b'x', 'b': b''})


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs,option', [
    (dict(user_data=5), 'cloud_init.user_data'),
    (dict(user_data=['a']), 'cloud_init.user_data'),
    (dict(user_data=b'#cloud-config\n'), 'cloud_init.user_data'),
    (dict(meta_data='instance-id: x'), 'cloud_init.meta_data'),
    (dict(meta_data=['x']), 'cloud_init.meta_data'),
    (dict(network_config=3), 'cloud_init.network_config'),
    (dict(network_config=['x']), 'cloud_init.network_config'),
    (dict(user_data={1: 'a'}), 'cloud_init.user_data'),
    (dict(user_data={'users': [{'name': object()}]}), 'cloud_init.user_data.users[0].name'),
    (dict(user_data={'write_files': [{'content': b'x'}]}),
     'cloud_init.user_data.write_files[0].content'),
    (dict(user_data={'x': {1, 2}}), 'cloud_init.user_data.x'),
    (dict(user_data={'x': float('nan')}), 'cloud_init.user_data.x'),
    (dict(meta_data={('a', 'b'): 1}), 'cloud_init.meta_data'),
    (dict(meta_data={'instance-id': None}), 'cloud_init.meta_data.instance-id'),
    (dict(meta_data={'instance-id': 7}), 'cloud_init.meta_data.instance-id'),
    (dict(meta_data={'local-hostname': ''}), 'cloud_init.meta_data.local-hostname'),
    (dict(network_config={'ethernets': {3: {}}}), 'cloud_init.network_config.ethernets'),
    (dict(network_config='version: [2'), 'cloud_init.network_config'),
    (dict(network_config='- a\n- b\n'), 'cloud_init.network_config'),
])
def test_bad_input_names_the_option(kwargs, option):
    with pytest.raises(OptionError) as info:
        cloudinit.render('web1', **kwargs)
    assert info.value.option == option
    assert str(info.value).startswith(option + ': ')


def test_option_prefix_is_configurable():
    with pytest.raises(OptionError) as info:
        cloudinit.render('web1', user_data=5, option='vms[2].cloud_init')
    assert info.value.option == 'vms[2].cloud_init.user_data'


@pytest.mark.parametrize('user_data', [
    '#cloud-config\npassword: s3cr3t: hunter2\n',
    '#cloud-config\nusers: [s3cr3t\n',
    '#cloud-config\n\tpassword: s3cr3t\n',
    '#cloud-config\n- s3cr3t\n',
    '#cloud-config\ns3cr3t\n',
    '\n#cloud-config\npassword: s3cr3t\n',
    '  #cloud-config\npassword: s3cr3t\n',
])
def test_malformed_cloud_config_rejected_without_echoing_it(user_data):
    with pytest.raises(OptionError) as info:
        cloudinit.render('web1', user_data=user_data)
    assert info.value.option == 'cloud_init.user_data'
    assert 's3cr3t' not in str(info.value)
    assert 's3cr3t' not in repr(info.value.details)


def test_yaml_error_reports_position():
    with pytest.raises(OptionError) as info:
        cloudinit.render('web1', user_data='#cloud-config\na: 1\nb: c: d\n')
    assert 'line 3' in str(info.value)


def test_bad_name():
    with pytest.raises(OptionError) as info:
        cloudinit.render('')
    assert info.value.option == 'name'


def test_missing_yaml_reported_only_when_rendering(monkeypatch):
    monkeypatch.setattr(cloudinit, 'yaml', None)
    monkeypatch.setattr(cloudinit, 'YAML_IMPORT_ERROR', 'Traceback: no yaml')
    with pytest.raises(MissingDependency) as info:
        cloudinit.render('web1')
    assert info.value.library == 'PyYAML'
    assert info.value.exception == 'Traceback: no yaml'
    # digest and needs_rebuild do not need it
    assert cloudinit.needs_rebuild('/nonexistent/x.iso', 'a', 'a') is True


def test_missing_pycdlib_reported_only_when_building(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'pycdlib', None)      # import pycdlib raises ImportError
    result = cloudinit.render('web1')  # fine without pycdlib
    with pytest.raises(MissingDependency) as info:
        cloudinit.build_iso(str(tmp_path / 'cidata.iso'), result['files'])
    assert info.value.library == 'pycdlib'
    assert os.listdir(str(tmp_path)) == []


# --- ISO -------------------------------------------------------------------------------------

@pytest.fixture
def rendered():
    return cloudinit.render(
        'web1',
        user_data={'users': [{'name': 'ops', 'passwd': 'x' * 3000}], 'packages': ['nginx']},
        meta_data={'public-keys': ['ssh-ed25519 AAAA']},
        network_config={'version': 2, 'ethernets': {'eth0': {'dhcp4': True}}})


def _read_independently(path):
    """Open the image with pycdlib directly (not through cloudinit.read_iso)."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        info = {
            'volume_id': iso.pvd.volume_identifier.decode('ascii').rstrip(' '),
            'joliet_volume_id': iso.joliet_vd.volume_identifier.decode('utf-16-be').rstrip(' '),
            'rock_ridge': iso.has_rock_ridge(),
            'joliet': iso.has_joliet(),
            'rr': {}, 'joliet_files': {},
        }
        for child in iso.list_children(rr_path='/'):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path='/' + name)
                info['rr'][name] = out.getvalue()
        for child in iso.list_children(joliet_path='/'):
            if child.is_file():
                name = child.file_identifier().decode('utf-16-be')
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, joliet_path='/' + name)
                info['joliet_files'][name] = out.getvalue()
        return info
    finally:
        iso.close()


def test_build_iso_readable_by_pycdlib(tmp_path, rendered):
    path = str(tmp_path / 'cidata.iso')
    cloudinit.build_iso(path, rendered['files'])
    info = _read_independently(path)
    assert info['volume_id'] == 'cidata'
    assert info['joliet_volume_id'] == 'cidata'
    assert info['rock_ridge'] and info['joliet']
    assert info['rr'] == rendered['files']
    assert info['joliet_files'] == rendered['files']
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600
    assert st.st_size % 2048 == 0  # whole sectors, as CH wants for a raw disk
    assert os.listdir(str(tmp_path)) == ['cidata.iso']


def test_read_iso_round_trip_and_digest(tmp_path, rendered):
    path = str(tmp_path / 'cidata.iso')
    cloudinit.build_iso(path, rendered['files'])
    files = cloudinit.read_iso(path)
    assert files == rendered['files']
    assert cloudinit.digest_files(files) == rendered['digest']


def test_build_iso_replaces_existing_image(tmp_path, rendered):
    path = str(tmp_path / 'cidata.iso')
    cloudinit.build_iso(path, cloudinit.render('old')['files'])
    cloudinit.build_iso(path, rendered['files'])
    assert cloudinit.read_iso(path) == rendered['files']
    assert os.listdir(str(tmp_path)) == ['cidata.iso']


def test_failed_build_leaves_old_image_and_no_temp_file(tmp_path, rendered, monkeypatch):
    path = str(tmp_path / 'cidata.iso')
    old = cloudinit.render('old')['files']
    cloudinit.build_iso(path, old)

    def no_space(*_args):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(cloudinit.os, 'rename', no_space)
    with pytest.raises(HostError) as info:
        cloudinit.build_iso(path, rendered['files'])
    assert 'No space left' in str(info.value)
    monkeypatch.undo()
    assert os.listdir(str(tmp_path)) == ['cidata.iso']
    assert cloudinit.read_iso(path) == old


def test_build_iso_into_missing_directory(tmp_path, rendered):
    with pytest.raises(HostError):
        cloudinit.build_iso(str(tmp_path / 'nope' / 'cidata.iso'), rendered['files'])


@pytest.mark.parametrize('files', [{}, {'User Data': b'x'}, {'user-data': 'text'}])
def test_build_iso_rejects_bad_files(tmp_path, files):
    with pytest.raises(CloudHVError):
        cloudinit.build_iso(str(tmp_path / 'cidata.iso'), files)
    assert os.listdir(str(tmp_path)) == []


def test_read_iso_not_an_iso(tmp_path):
    path = tmp_path / 'junk.iso'
    path.write_bytes(b'\0' * 70000)
    with pytest.raises(CloudHVError):
        cloudinit.read_iso(str(path))
    with pytest.raises(HostError):
        cloudinit.read_iso(str(tmp_path / 'missing.iso'))


def test_needs_rebuild(tmp_path, rendered):
    path = str(tmp_path / 'cidata.iso')
    digest = rendered['digest']
    assert cloudinit.needs_rebuild(path, digest, None)  # missing
    assert cloudinit.needs_rebuild(path, digest, digest)  # still missing
    cloudinit.build_iso(path, rendered['files'])
    assert not cloudinit.needs_rebuild(path, digest, digest)
    assert not cloudinit.needs_rebuild(path, digest, digest, verify=True)
    assert cloudinit.needs_rebuild(path, digest, None)
    assert cloudinit.needs_rebuild(path, cloudinit.render('web1')['digest'], digest)
    # content swapped behind our back: only verification notices
    cloudinit.build_iso(path, cloudinit.render('other')['files'])
    assert not cloudinit.needs_rebuild(path, digest, digest)
    assert cloudinit.needs_rebuild(path, digest, digest, verify=True)
    with open(path, 'wb') as handle:
        handle.write(b'garbage')
    assert cloudinit.needs_rebuild(path, digest, digest, verify=True)


def _kernel_has_iso9660():
    try:
        with open('/proc/filesystems') as handle:
            return any(line.split()[-1] == 'iso9660' for line in handle if line.strip())
    except (OSError, IOError):
        return False


@pytest.mark.skipif(not os.path.exists('/usr/sbin/blkid') and not os.path.exists('/sbin/blkid'),
                    reason='blkid not installed')
def test_blkid_finds_the_cidata_label(tmp_path, rendered):
    """cloud-init's NoCloud finds its seed by filesystem label (blkid -t LABEL=cidata)."""
    path = str(tmp_path / 'cidata.iso')
    cloudinit.build_iso(path, rendered['files'])
    out = subprocess.run(['blkid', '-p', '-o', 'export', path], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    fields = dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
    assert fields.get('TYPE') == 'iso9660'
    assert fields.get('LABEL') == 'cidata'


def _mount(image, target, options):
    proc = subprocess.run(['mount', '-o', options, image, target],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return proc.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root for a loop mount')
@pytest.mark.skipif(not _kernel_has_iso9660(), reason='this kernel has no iso9660 filesystem')
@pytest.mark.parametrize('options', ['loop,ro', 'loop,ro,norock'])
def test_linux_kernel_sees_exact_names(tmp_path, rendered, options):
    """What the guest does: the kernel's iso9660 driver (Rock Ridge, or Joliet with norock)."""
    path = str(tmp_path / 'cidata.iso')
    cloudinit.build_iso(path, rendered['files'])
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    if not _mount(path, str(mnt), options):
        pytest.skip('loop mount not available here')
    try:
        assert sorted(os.listdir(str(mnt))) == sorted(rendered['files'])
        for name, data in rendered['files'].items():
            assert (mnt / name).read_bytes() == data
    finally:
        subprocess.run(['umount', str(mnt)], check=False)
